// Package modbus is the Modbus TCP source: it polls holding and input
// registers, coils and discrete inputs of one device (or one gateway with
// several unit ids) over a single connection and emits raw samples.
//
// New validates the configuration and builds the poll plan once: tags are
// grouped by unit id, area and poll interval, and merged into as few read
// requests as the protocol allows (125 registers or 2000 bits per request,
// bridging gaps of at most MaxGap unused registers). Run handles one session
// with one request in flight at a time; the connectors.Supervisor owns
// reconnects.
//
// The package must not import harmonize or publish, must not write to the
// device, and must not retry a broken session by itself.
package modbus
