// Package harmonize turns raw samples into harmonized UNS points.
//
// Compile checks a model.Model once (expressions parsed and type-checked,
// tag references resolved, cycles between computed tags rejected) and
// produces an immutable Plan that any number of goroutines may share. An
// Engine holds the mutable per-tag state for one Plan and maps batches of
// samples to points: expression, enum mapping, declared datatype, quality
// and timestamp rules, recomputation of derived tags, deadband /
// report-by-exception and heartbeats. When the model is reloaded,
// Engine.Successor makes the engine for the new Plan, carrying over the
// state of every tag that did not change.
//
// Expression semantics are those of github.com/expr-lang/expr. Expressions
// built only from numbers, booleans, strings, arithmetic, comparisons,
// logic, ?: and a few math builtins are evaluated by typed Go closures built
// from expr's checked syntax tree, without allocating; everything else runs
// on expr's VM. Both paths give the same results (see the differential fuzz
// test).
//
// Heartbeats republish a tag's latest harmonized state (value, quality,
// stale flag) with the timestamp of the reading it came from, not the time
// of the heartbeat: the timestamp always says when the value was last read.
//
// harmonize must not do I/O (it never talks to sources or sinks) and must not
// import connectors or publish; the gateway wires them together.
package harmonize
