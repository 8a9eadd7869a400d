//! The exports of each world, as methods of [`PluginHost`]: each one a call through
//! [`PluginHost::call`] with the export it names.

use std::sync::Arc;

use wasmtime::Store;

use super::bindings::provisioner::tenantry::plugin::types as wit;
use super::compile::Provision;
use super::host::PluginHost;
use super::sandbox::CallState;
use super::{
    BundlePart, CallError, Decision, Drift, LifecycleChange, Logged, Measurement, Outcome,
    PluginError, PluginInfo, PluginTenant, RenderError, Step, Template, Usage, World,
};

/// A cap a result broke: what it was, the cap, its setting.
type Broken = (String, String, &'static str);

/// `logged` as it was, or, when its result breaks a cap (`check`), the error that names it.
fn capped<T, E>(
    plugin: &str,
    mut logged: Logged<T, E>,
    check: impl FnOnce(&T) -> Option<Broken>,
) -> Logged<T, E> {
    if let Ok(Ok(value)) = &logged.result
        && let Some((what, cap, setting)) = check(value)
    {
        logged.result = Err(CallError::TooLarge {
            plugin: plugin.to_owned(),
            what,
            cap,
            setting,
        });
    }
    logged
}

/// The cap on what one step (or a transition, an import) reports it did: its output and its
/// manual follow-up together, as journaled.
fn outcome_cap(max: usize) -> impl FnOnce(&Outcome) -> Option<Broken> {
    move |outcome: &Outcome| {
        let bytes = outcome.output.len() + outcome.manual_follow_up.as_ref().map_or(0, String::len);
        (bytes > max).then(|| {
            (
                format!("an outcome of {bytes} bytes"),
                format!("{max} bytes"),
                "max_step_output_bytes",
            )
        })
    }
}

impl PluginHost {
    /// `render` of a renderer plugin.
    pub async fn render(
        self: &Arc<Self>,
        plugin: &str,
        template: Template,
        values: Vec<(String, String)>,
    ) -> Result<Result<String, RenderError>, CallError> {
        self.render_logged(plugin, template, values).await.result
    }

    /// `render` of a renderer plugin, with its log lines.
    pub async fn render_logged(
        self: &Arc<Self>,
        plugin: &str,
        template: Template,
        values: Vec<(String, String)>,
    ) -> Logged<String, RenderError> {
        let (result, log) = self
            .call(plugin, World::Renderer, None, move |instance, store| {
                instance.render(store, &template, &values)
            })
            .await;
        let max = self.services().config.max_result_bytes;
        capped(plugin, Logged { result, log }, |text: &String| {
            (text.len() > max).then(|| {
                (
                    format!("a rendering of {} bytes", text.len()),
                    format!("{max} bytes"),
                    "max_result_bytes",
                )
            })
        })
    }

    /// `evaluate` of a quota-policy plugin.
    pub async fn evaluate(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        usage: Vec<Usage>,
    ) -> Result<Result<Decision, PluginError>, CallError> {
        self.evaluate_logged(plugin, tenant, usage).await.result
    }

    /// `evaluate` of a quota-policy plugin, with its log lines.
    pub async fn evaluate_logged(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        usage: Vec<Usage>,
    ) -> Logged<Decision> {
        let wit_tenant = tenant.to_wit();
        let (result, log) = self
            .call(
                plugin,
                World::QuotaPolicy,
                Some(tenant),
                move |instance, store| instance.evaluate(store, &wit_tenant, &usage),
            )
            .await;
        Logged { result, log }
    }

    /// `describe` of a provisioner plugin.
    pub async fn describe(self: &Arc<Self>, plugin: &str) -> Result<PluginInfo, CallError> {
        self.describe_logged(plugin).await.0
    }

    /// `describe` of a provisioner plugin, with its log lines.
    pub async fn describe_logged(
        self: &Arc<Self>,
        plugin: &str,
    ) -> (Result<PluginInfo, CallError>, Vec<super::LogLine>) {
        self.call(plugin, World::Provisioner, None, |instance, store| {
            instance.provisioner().describe(store)
        })
        .await
    }

    /// One export of a provisioner, for `tenant`, with the plugin's log lines.
    async fn provision<T: Send + 'static>(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        f: impl Fn(
            &Provision<'_>,
            &mut Store<CallState>,
            &wit::Tenant,
        ) -> wasmtime::Result<Result<T, PluginError>>
        + Send
        + 'static,
    ) -> Logged<T> {
        let wit_tenant = tenant.to_wit();
        let (result, log) = self
            .call(
                plugin,
                World::Provisioner,
                Some(tenant),
                move |instance, store| f(&instance.provisioner(), store, &wit_tenant),
            )
            .await;
        Logged { result, log }
    }

    /// `plan` of a provisioner plugin.
    pub async fn plan(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        request: String,
    ) -> Result<Result<Vec<Step>, PluginError>, CallError> {
        self.plan_logged(plugin, tenant, request).await.result
    }

    /// `plan` of a provisioner plugin, with its log lines.
    pub async fn plan_logged(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        request: String,
    ) -> Logged<Vec<Step>> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.plan(store, tenant, &request)
            })
            .await;
        let config = &self.services().config;
        capped(plugin, logged, |steps: &Vec<Step>| {
            if steps.len() > config.max_plan_steps {
                return Some((
                    format!("a plan of {} steps", steps.len()),
                    format!("{} steps", config.max_plan_steps),
                    "max_plan_steps",
                ));
            }
            if let Some(step) = steps
                .iter()
                .find(|s| s.input.len() > config.max_step_input_bytes)
            {
                return Some((
                    format!(
                        "step `{}` with an input of {} bytes",
                        step.id,
                        step.input.len()
                    ),
                    format!("{} bytes", config.max_step_input_bytes),
                    "max_step_input_bytes",
                ));
            }
            let total: usize = steps
                .iter()
                .map(|s| s.id.len() + s.description.len() + s.input.len())
                .sum();
            (total > config.max_result_bytes).then(|| {
                (
                    format!("a plan of {total} bytes"),
                    format!("{} bytes", config.max_result_bytes),
                    "max_result_bytes",
                )
            })
        })
    }

    /// `apply` of one step.
    pub async fn apply(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        step: Step,
        idempotency_key: String,
    ) -> Logged<Outcome> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.apply(store, tenant, &step, &idempotency_key)
            })
            .await;
        let max = self.services().config.max_step_output_bytes;
        capped(plugin, logged, outcome_cap(max))
    }

    /// `compensate` of one applied step.
    pub async fn compensate(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        step: Step,
        outcome: Outcome,
        idempotency_key: String,
    ) -> Logged<Outcome> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.compensate(store, tenant, &step, &outcome, &idempotency_key)
            })
            .await;
        let max = self.services().config.max_step_output_bytes;
        capped(plugin, logged, outcome_cap(max))
    }

    /// `observe`: drift between the applied steps and the backend.
    pub async fn observe(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Logged<Vec<Drift>> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.observe(store, tenant, &applied)
            })
            .await;
        let max = self.services().config.max_result_bytes;
        capped(plugin, logged, |drifts: &Vec<Drift>| {
            let total: usize = drifts
                .iter()
                .map(|d| d.resource.len() + d.problem.len())
                .sum();
            (total > max).then(|| {
                (
                    format!("a drift report of {total} bytes"),
                    format!("{max} bytes"),
                    "max_result_bytes",
                )
            })
        })
    }

    /// `transition`: a lifecycle change carried into the backend.
    pub async fn transition(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        change: LifecycleChange,
        reason: String,
    ) -> Logged<Outcome> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.transition(store, tenant, change, &reason)
            })
            .await;
        let max = self.services().config.max_step_output_bytes;
        capped(plugin, logged, outcome_cap(max))
    }

    /// `measure`: the tenant's use of the plugin's backend, given the steps applied for it
    /// (nothing from a 0.1.0 plugin).
    pub async fn measure(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Logged<Vec<Measurement>> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.measure(store, tenant, &applied)
            })
            .await;
        let max = self.services().config.max_measurements;
        capped(plugin, logged, |report: &Vec<Measurement>| {
            (report.len() > max).then(|| {
                (
                    format!("a measure report of {} measurements", report.len()),
                    format!("{max} measurements"),
                    "max_measurements",
                )
            })
        })
    }

    /// `export-tenant`: what the backend holds of the tenant, for a bundle.
    pub async fn export_tenant(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Logged<Option<BundlePart>> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.export_tenant(store, tenant, &applied)
            })
            .await;
        let max = self.services().config.max_result_bytes;
        capped(plugin, logged, |part: &Option<BundlePart>| {
            let bytes = part.as_ref().map_or(0, |p| {
                p.data.len() + p.instance_specific.iter().map(String::len).sum::<usize>()
            });
            (bytes > max).then(|| {
                (
                    format!("a bundle part of {bytes} bytes"),
                    format!("{max} bytes"),
                    "max_result_bytes",
                )
            })
        })
    }

    /// `import-tenant`: restores what `export-tenant` handed over.
    pub async fn import_tenant(
        self: &Arc<Self>,
        plugin: &str,
        tenant: &PluginTenant,
        part: BundlePart,
    ) -> Logged<Outcome> {
        let logged = self
            .provision(plugin, tenant, move |guest, store, tenant| {
                guest.import_tenant(store, tenant, &part)
            })
            .await;
        let max = self.services().config.max_step_output_bytes;
        capped(plugin, logged, outcome_cap(max))
    }
}
