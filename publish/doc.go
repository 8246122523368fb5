// Package publish takes harmonized points from the engine and delivers them
// to every sink: it encodes each point once (UNS JSON, see AppendJSON), hands
// the same immutable bytes to each sink's own bounded Queue, and runs the
// sinks (Fanout). Sinks implement one wire protocol each (publish/mqtt, ...).
//
// It must never block the caller of Publish on a slow or absent sink: a full
// queue drops its oldest message, and every drop is counted and logged at a
// limited rate.
//
// With a store directory every sink's queue is durable (store and
// forward): each message is appended to the sink's Store (a segment log on
// disk) before it is queued, and leaves the store when the sink reports it
// Done. A sink that falls behind reads its backlog back from disk, in
// order; a gateway that restarts sends what was left first. Over the
// store's byte budget the oldest waiting messages are dropped, counted
// exactly. Delivery is at-least-once: a message whose acknowledgement was
// lost to a disconnect or a crash is sent again. It must not import connectors or harmonize, and it knows
// nothing about any particular broker or protocol.
package publish
