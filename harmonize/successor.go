package harmonize

import (
	"maps"
	"slices"
	"strings"

	"github.com/unsgate/unsgate/model"
)

// Successor returns an engine for plan p that carries on from e, for a
// model reloaded while the sources keep running, and appends to out the
// points the change itself produces.
//
// A tag of p is unchanged when e's plan has a tag of the same topic with
// the same metadata, the same binding (source and key) and the same
// harmonization (expression, inputs, datatype, enum, deadband, report by
// exception, heartbeat). An unchanged tag keeps its whole state: its last
// raw sample, value, quality, what was last published (so report by
// exception and the deadband carry on) and its heartbeat clock. Nothing is
// published for it.
//
// Every other tag of p (new or changed) starts afresh, but not empty: an
// addressed tag takes the latest sample of its binding from e, when e read
// it under the same (source, key), and every new or changed tag that can be
// evaluated (its sample and inputs seen) is evaluated at once and
// published, as are the tags that read it if their value changes. So a
// changed expression takes effect without waiting for the source to send
// again, which an OPC UA subscription only does when the value changes.
//
// The counters continue e's. Call Successor from the goroutine that calls
// e.Apply, and use only the successor afterwards.
func (e *Engine) Successor(p *Plan, out []model.Point) (*Engine, []model.Point) {
	n := NewEngine(p, Options{Logger: e.log, Now: e.now})
	n.samples.Store(e.samples.Load())
	n.points.Store(e.points.Load())
	n.suppressed.Store(e.suppressed.Load())
	n.exprErrors.Store(e.exprErrors.Load())
	n.unknown.Store(e.unknown.Load())
	n.unknownLog, n.unknownSkip, n.unknownLogged = e.unknownLog, e.unknownSkip, e.unknownLogged

	old := e.plan
	oldBind, newBind := old.tagBindings(), p.tagBindings()
	var fresh []int32
	for ti := range p.specs {
		oi, found := slices.BinarySearchFunc(old.tags, p.tags[ti].Topic, func(m *model.TagMeta, topic string) int {
			return strings.Compare(m.Topic, topic)
		})
		if found && sameBinding(old, oldBind[oi], p, newBind[ti]) && sameTag(old, int32(oi), p, int32(ti)) {
			n.state[ti] = e.state[oi]
			n.state[ti].dirty = false
			continue
		}
		if b := newBind[ti]; b >= 0 {
			if og, ok := old.binding(p.bindings[b].Source, p.bindings[b].Key); ok {
				from, to := &e.state[old.group(og)[0]], &n.state[ti]
				if from.rawSeen {
					to.raw, to.rawQ, to.rawStale, to.rawT, to.rawSeen, to.rawSt = from.raw, from.rawQ, from.rawStale, from.rawT, true, from.rawSt
				}
			}
		}
		fresh = append(fresh, int32(ti))
	}

	c := batchState{now: n.now}
	for _, ti := range fresh {
		spec := &p.specs[ti]
		st := &n.state[ti]
		switch {
		case spec.computed:
			n.markDirty(ti, spec)
		case spec.addressed && st.rawSeen:
			v, q := n.harmonize(ti, spec, st.raw, st.rawQ, &c)
			out = n.update(ti, spec, v, q, st.rawStale, st.rawSt, st.rawT, st.raw, out, &c)
		}
	}
	out = n.recompute(out, &c)
	n.flushCounts(&c)
	return n, out
}

// tagBindings maps each tag to the index of its binding, -1 for derived
// tags.
func (p *Plan) tagBindings() []int32 {
	out := make([]int32, len(p.specs))
	for i := range out {
		out[i] = -1
	}
	for g := range p.bindings {
		for _, ti := range p.group(int32(g)) {
			out[ti] = int32(g)
		}
	}
	return out
}

func sameBinding(a *Plan, ab int32, b *Plan, bb int32) bool {
	if ab < 0 || bb < 0 {
		return ab == bb
	}
	x, y := a.bindings[ab], b.bindings[bb]
	return x.Source == y.Source && x.Key == y.Key
}

// sameTag reports whether tag ai of plan a and tag bi of plan b describe
// and harmonize the same way (their bindings aside).
func sameTag(a *Plan, ai int32, b *Plan, bi int32) bool {
	ma, mb := *a.tags[ai], *b.tags[bi]
	ma.Index, mb.Index = 0, 0
	if ma != mb {
		return false
	}
	x, y := &a.specs[ai], &b.specs[bi]
	if x.addressed != y.addressed || x.computed != y.computed || x.out != y.out || x.width != y.width ||
		x.deadband != y.deadband || x.onChange != y.onChange || x.heartbeat != y.heartbeat ||
		!maps.Equal(x.enum, y.enum) || !sameProgram(x.prog, y.prog) ||
		len(x.slots) != len(y.slots) || len(x.refs) != len(y.refs) {
		return false
	}
	for k := range x.slots {
		s, t := &x.slots[k], &y.slots[k]
		if s.kind != t.kind || s.typ != t.typ {
			return false
		}
		switch s.kind {
		case slotParam:
			if !s.param.Equal(t.param) {
				return false
			}
		case slotTag:
			if a.tags[s.tag].Topic != b.tags[t.tag].Topic {
				return false
			}
		}
	}
	for k := range x.refs {
		if a.tags[x.refs[k]].Topic != b.tags[y.refs[k]].Topic {
			return false
		}
	}
	return true
}

func sameProgram(a, b *program) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.text == b.text && a.result == b.result && slices.Equal(a.names, b.names) && slices.Equal(a.types, b.types)
}
