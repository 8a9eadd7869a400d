//! The migrations are embedded in the crate (`diesel_migrations::embed_migrations!`): a change
//! of one must rebuild it.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    println!("cargo:rerun-if-changed=build.rs");
}
