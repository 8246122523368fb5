// Package opcua is the OPC UA client source: it connects to one server
// endpoint with the configured security (persistent client identity, a
// trusted-certificates directory for servers), resolves the model's node
// bindings at every connect (namespace URIs, browse paths), and reads them by
// subscription (monitored items, the default) or by polling (Read in batches).
// It also walks a server's address space for `unsgate browse`.
//
// A Source handles one session; connectors.Supervisor reconnects it. The
// package must not import harmonize or publish.
package opcua
