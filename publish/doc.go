// Package publish takes harmonized points from the engine and delivers them
// to every sink: it encodes each point once (UNS JSON, see AppendJSON), hands
// the same immutable bytes to each sink's own bounded Queue, and runs the
// sinks (Fanout). Sinks implement one wire protocol each (publish/mqtt, ...).
//
// It must never block the caller of Publish on a slow or absent sink: a full
// queue drops its oldest message, and every drop is counted and logged at a
// limited rate. It must not import connectors or harmonize, and it knows
// nothing about any particular broker or protocol.
package publish
