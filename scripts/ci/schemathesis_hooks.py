"""schemathesis hooks of the API conformance step: a plugin component is sent as its bytes
(`application/wasm`), like any binary body."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
