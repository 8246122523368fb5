package gateway

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"reflect"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/connectors/modbus"
	"github.com/unsgate/unsgate/connectors/opcua"
	"github.com/unsgate/unsgate/harmonize"
	"github.com/unsgate/unsgate/model"
)

// sourceSpec is everything a source is made from: its connector's config
// (with its tags, without a logger) and its backoff. Two equal specs make
// the same source, so a reload keeps a running source whose spec it did
// not change.
//
// The tags are compared by a digest: once its source is made, a spec
// keeps the digest, not the tags (the source has its own plan of them),
// which would be a third copy of every binding of a large plant.
type sourceSpec struct {
	modbus  *modbus.Config // one of modbus and opcua is set
	opcua   *opcua.Config
	backoff connectors.Backoff
	tags    [sha256.Size]byte // digest of the config's Tags
}

func (s sourceSpec) equal(o sourceSpec) bool {
	return reflect.DeepEqual(s.withoutTags(), o.withoutTags())
}

// withoutTags returns s with the connector config's Tags left out (the
// digest stays).
func (s sourceSpec) withoutTags() sourceSpec {
	if s.modbus != nil {
		c := *s.modbus
		c.Tags = nil
		s.modbus = &c
	}
	if s.opcua != nil {
		c := *s.opcua
		c.Tags = nil
		s.opcua = &c
	}
	return s
}

// tagsDigest is the digest of a connector's tags in order. The tag types
// are plain values (strings, numbers, slices of strings), which %#v
// prints completely and the same way every time: so equal digests mean
// equal tags, as reflect.DeepEqual sees them.
func tagsDigest[T any](tags []T) [sha256.Size]byte {
	h := sha256.New()
	w := bufio.NewWriter(h)
	for i := range tags {
		fmt.Fprintf(w, "%#v\n", tags[i])
	}
	w.Flush()
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// sourceRun is one source of the gateway and, while it runs, how to stop
// it.
type sourceRun struct {
	name string
	spec sourceSpec
	sup  *connectors.Supervisor

	// Set by startSource, under Gateway.life.
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor's Run has returned
}

// sourceSpecs works out the sources the plan reads from and what each
// must read: one per source the model binds tags to.
func sourceSpecs(cfg *Config, plan *harmonize.Plan) (map[string]sourceSpec, error) {
	mbTags := map[string][]modbus.Tag{}
	uaTags := map[string][]opcua.Tag{}
	for _, b := range plan.Bindings() {
		sc := cfg.Sources[b.Source]
		if sc == nil {
			return nil, fmt.Errorf("model names source %q, which the config does not define", b.Source)
		}
		switch {
		case b.Address != nil && b.Address.Modbus != nil && sc.Protocol() == model.ProtocolModbus:
			mbTags[b.Source] = append(mbTags[b.Source], modbus.Tag{Key: b.Key, Addr: *b.Address.Modbus, Poll: b.Poll})
		case b.Address != nil && b.Address.OPCUA != nil && sc.Protocol() == model.ProtocolOPCUA:
			uaTags[b.Source] = append(uaTags[b.Source], opcua.Tag{Key: b.Key, Addr: *b.Address.OPCUA, Poll: b.Poll})
		default:
			// CompileModel reports this with positions; New is also
			// called by code that skipped it.
			return nil, fmt.Errorf("source %s: address %q is not a %s address", b.Source, b.Key, sc.Protocol())
		}
	}
	specs := make(map[string]sourceSpec, len(mbTags)+len(uaTags))
	backoff := func(sc *SourceConfig) connectors.Backoff {
		return connectors.Backoff{Initial: sc.Backoff.Initial, Max: sc.Backoff.Max}
	}
	for name, tags := range mbTags {
		sc := cfg.Sources[name]
		specs[name] = sourceSpec{backoff: backoff(sc), tags: tagsDigest(tags), modbus: &modbus.Config{
			Name: name, URL: sc.URL.V, UnitID: sc.UnitID.V, Poll: sc.Poll, Timeout: sc.Timeout,
			Pause: sc.Pause.V, MaxGap: sc.MaxGap.V, MaxBitGap: sc.MaxBitGap.V, StaleAfter: sc.StaleAfter.V,
			Tags: tags,
		}}
	}
	for name, tags := range uaTags {
		sc := cfg.Sources[name]
		c := sc.opcuaConfig(defaultAppURI(cfg.ID), tags)
		specs[name] = sourceSpec{backoff: backoff(sc), tags: tagsDigest(tags), opcua: &c}
	}
	return specs, nil
}

// newSource makes the source of spec, supervised; it does not connect.
func (g *Gateway) newSource(name string, spec sourceSpec) (*sourceRun, error) {
	var src connectors.Source
	var err error
	if spec.opcua != nil {
		c := *spec.opcua
		c.Logger = g.logger
		src, err = opcua.New(c)
	} else {
		c := *spec.modbus
		c.Logger = g.logger
		src, err = modbus.New(c)
	}
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", name, err)
	}
	sup := connectors.NewSupervisor(src, spec.backoff, g.logger)
	// Stateful sinks (Sparkplug) hear of sources going up and down in
	// order with their points: DBIRTH and DDEATH of their devices.
	sup.OnState(func(st connectors.State) {
		switch st {
		case connectors.StateConnected:
			g.fanout.SourceState(name, true)
		case connectors.StateReconnecting, connectors.StateFailed:
			g.fanout.SourceState(name, false)
		}
	})
	return &sourceRun{name: name, spec: spec.withoutTags(), sup: sup}, nil
}

// startSource runs s under its own context, a child of the sources'
// context. Caller holds life, and the gateway is running.
func (g *Gateway) startSource(s *sourceRun) {
	ctx, cancel := context.WithCancel(g.srcCtx)
	s.cancel, s.done = cancel, make(chan struct{})
	g.srcWG.Add(1)
	go func() {
		defer g.srcWG.Done()
		defer close(s.done)
		s.sup.Run(ctx, g.emit)
	}()
}

// stopSources stops the sources and waits until their sessions have ended
// (a cancelled session emits nothing more).
func stopSources(srcs []*sourceRun) {
	for _, s := range srcs {
		s.cancel()
	}
	for _, s := range srcs {
		<-s.done
	}
}

// sourceList returns the gateway's sources, sorted by name.
func (g *Gateway) sourceList() []*sourceRun {
	g.srcMu.Lock()
	defer g.srcMu.Unlock()
	return g.sources
}
