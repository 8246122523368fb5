package gateway

import (
	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/harmonize"
	"github.com/unsgate/unsgate/publish"
)

// Stats is a snapshot of the gateway's counters, safe to take at any time.
type Stats struct {
	Engine  harmonize.Stats
	Sources []SourceStats
	Sinks   []publish.SinkStats
}

// SourceStats is one source's supervision state.
type SourceStats struct {
	Name string
	connectors.Status
}

// Stats returns the current counters of the engine, sources and sinks.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	engine := g.engine // replaced by a reload
	g.mu.Unlock()
	st := Stats{Engine: engine.Stats(), Sinks: g.fanout.Stats()}
	for _, s := range g.sourceList() {
		st.Sources = append(st.Sources, SourceStats{Name: s.name, Status: s.sup.Status()})
	}
	return st
}
