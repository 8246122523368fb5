// Package gateway is the runtime: it reads the gateway config, loads and
// compiles the model, wires sources (connectors), the harmonize engine and
// the sinks (publish) together, and owns the lifecycle from start to a
// bounded, flushing shutdown. It is the only package that imports
// connectors, harmonize and publish; they never import each other.
package gateway
