package gateway

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/unsgate/unsgate/harmonize"
	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/mqtt"
)

// ErrNotRunning is returned by Reload and ReloadFiles when Run has not
// started the gateway yet, or is stopping it.
var ErrNotRunning = errors.New("gateway: reload: the gateway is not running")

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Tags int // tags in the new plan
	// Sources by name: kept running (their connection untouched), started
	// (new in the model or config), restarted (their config or tags
	// changed) and stopped (no tag of the model reads them any more).
	Kept, Started, Restarted, Stopped []string
	// Sinks by name: replaced (their config changed; the queue carries
	// over), added and removed.
	SinksReplaced, SinksAdded, SinksRemoved []string
}

// Reload applies a newly loaded config, model and plan (see Load) to the
// running gateway, in this order: everything new is built and checked
// first, and on any error nothing changes and the old config and model
// keep running. Then sources that are gone or changed are stopped, the
// engine switches to the new plan atomically (tags that did not change
// keep their state, see harmonize.Engine.Successor), changed sinks are
// replaced, and new or changed sources are started. Sources and sinks whose
// config did not change keep running without reconnecting.
//
// Settings that cannot change at run time (id, data_dir, store, broker,
// presence, log_level, shutdown_timeout, http, sinks.sparkplug, ...) make the
// reload fail with model.Diagnostics naming each key. The result, good or
// bad, is logged and recorded in ModelStatus. Reload waits for sources and
// sinks to stop; it is safe to call from any goroutine while Run runs, and
// returns ErrNotRunning otherwise.
func (g *Gateway) Reload(cfg *Config, m *model.Model, plan *harmonize.Plan) (ReloadResult, error) {
	st := newModelStatus(cfg, m) // runs git: before taking the lock
	g.life.Lock()
	defer g.life.Unlock()
	if !g.running {
		return ReloadResult{}, ErrNotRunning
	}
	res, err := g.reload(cfg, m, plan)
	g.recordReload(st, err)
	if err == nil {
		g.logger.Info("reload applied", "version", st.Version, "tags", res.Tags,
			"sources_kept", len(res.Kept), "sources_started", res.Started, "sources_restarted", res.Restarted,
			"sources_stopped", res.Stopped, "sinks_replaced", res.SinksReplaced, "sinks_added", res.SinksAdded,
			"sinks_removed", res.SinksRemoved)
	}
	return res, err
}

// ReloadFiles reads the gateway's config file and its model files again
// (Load) and applies them with Reload; the watcher and SIGHUP call it.
// Problems in the files are recorded in ModelStatus with their
// file:line:col and logged, and the running config and model stay.
func (g *Gateway) ReloadFiles() (ReloadResult, error) {
	if !g.cfg.fromDisk {
		return ReloadResult{}, errors.New("gateway: reload: the config was not read from a file")
	}
	g.fileMu.Lock()
	defer g.fileMu.Unlock()
	sum := filesSum(watchedPaths(g.appliedConfig())) // before reading: a later change is seen again
	cfg, m, plan, err := Load(g.cfg.File)
	g.fileSum = sum
	defer settleHeap() // what loading took, and the old plan once replaced
	if err == nil && g.override != nil {
		err = g.override(cfg)
	}
	if err != nil {
		g.life.Lock()
		defer g.life.Unlock()
		if !g.running {
			return ReloadResult{}, ErrNotRunning
		}
		g.recordReload(nil, err)
		return ReloadResult{}, err
	}
	return g.Reload(cfg, m, plan)
}

// SetConfigOverride sets fn to be applied to every config ReloadFiles
// reads, before it is checked and applied, so that what the command line
// changed in the first config (--http-listen) stays changed; an error
// fails that reload. It may be called at any time.
func (g *Gateway) SetConfigOverride(fn func(*Config) error) {
	g.fileMu.Lock()
	g.override = fn
	g.fileMu.Unlock()
}

// appliedConfig is the config running now: the one New was given, or the
// last one a reload applied. Its sources and sinks.mqtt and sinks.kafka
// are current, unlike those of g.cfg.
func (g *Gateway) appliedConfig() *Config {
	return g.applied.Load()
}

// recordReload puts the outcome of a reload into the model status: on
// success st (the new model's), else the running model's with the errors.
// Caller holds life.
func (g *Gateway) recordReload(st *ModelStatus, err error) {
	now := time.Now()
	if err == nil {
		st.LastReload, st.LastResult = now, "ok"
		g.model.Store(st)
		return
	}
	cur := *g.model.Load()
	cur.LastReload, cur.LastResult, cur.Errors = now, "failed", errorLines(err)
	g.model.Store(&cur)
	g.logger.Error("reload failed; the running config and model stay", "err", err)
}

// errorLines splits an error into the lines ModelStatus shows: one per
// diagnostic (file:line:col: message).
func errorLines(err error) []string {
	var diags model.Diagnostics
	if errors.As(err, &diags) {
		out := make([]string, len(diags))
		for i, d := range diags {
			out[i] = d.String()
		}
		return out
	}
	return strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
}

// reload is Reload's work. Caller holds life.
func (g *Gateway) reload(cfg *Config, m *model.Model, plan *harmonize.Plan) (ReloadResult, error) {
	var res ReloadResult
	if err := g.restartOnly(cfg, m).Err(); err != nil {
		return res, err
	}

	// Build: nothing runs or changes yet.
	specs, err := sourceSpecs(cfg, plan)
	if err != nil {
		return res, err
	}
	old := map[string]*sourceRun{}
	for _, s := range g.sourceList() {
		old[s.name] = s
	}
	var next, start, stop []*sourceRun
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		cur := old[name]
		if cur != nil && cur.spec.equal(specs[name]) {
			next = append(next, cur)
			res.Kept = append(res.Kept, name)
			continue
		}
		s, err := g.newSource(name, specs[name])
		if err != nil {
			return ReloadResult{}, err
		}
		next, start = append(next, s), append(start, s)
		if cur != nil {
			stop = append(stop, cur)
			res.Restarted = append(res.Restarted, name)
		} else {
			res.Started = append(res.Started, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		if _, ok := specs[name]; !ok {
			stop = append(stop, old[name])
			res.Stopped = append(res.Stopped, name)
		}
	}

	mqttSpec := g.jsonSinkSpec(cfg)
	var newMQTT publish.Sink
	if mqttSpec != nil && !reflect.DeepEqual(mqttSpec, g.mqttSpec) {
		sink, err := mqtt.New(*mqttSpec)
		if err != nil {
			return ReloadResult{}, fmt.Errorf("sinks.mqtt: %w", err)
		}
		newMQTT = sink
	}
	kSpec := kafkaSpec(cfg)
	var newKafka *kafka.Sink
	if kSpec != nil && !reflect.DeepEqual(kSpec, g.kafkaSpec) {
		if newKafka, err = g.newKafka(kSpec); err != nil {
			return ReloadResult{}, err
		}
	}
	if newKafka != nil && g.kafkaSpec == nil {
		// The one step that can fail after building (its store must
		// open), so it goes first.
		if err := g.fanout.Add(newKafka); err != nil {
			return ReloadResult{}, fmt.Errorf("sinks.kafka: store and forward: %w", err)
		}
		res.SinksAdded = append(res.SinksAdded, newKafka.Name())
	}

	// Apply.
	stopSources(stop)
	g.mu.Lock()
	engine, points := g.engine.Successor(plan, g.points[:0])
	g.engine, g.plan = engine, plan
	// The sinks learn the new tags before the first point of one arrives.
	tags := plan.Tags()
	g.fanout.SetTags(tags)
	g.live.SetTags(tags)
	if len(points) > 0 {
		g.fanout.Publish(points)
		g.live.Record(points)
	}
	g.points = points
	g.mu.Unlock()
	res.Tags = len(tags)

	if newMQTT != nil {
		g.replaceSink(newMQTT, &res)
	}
	switch {
	case newKafka != nil && g.kafkaSpec != nil:
		g.replaceSink(newKafka, &res)
	case kSpec == nil && g.kafkaSpec != nil:
		name := kafka.DefaultName
		if err := g.fanout.Remove(name); err != nil {
			g.logger.Warn("removing a sink", "sink", name, "err", err)
		}
		res.SinksRemoved = append(res.SinksRemoved, name)
	}
	g.mqttSpec, g.kafkaSpec = mqttSpec, kSpec

	for _, s := range start {
		g.startSource(s)
	}
	g.srcMu.Lock()
	g.sources = next
	g.srcMu.Unlock()
	g.applied.Store(cfg)
	return res, nil
}

// replaceSink puts s in the place of the running sink of its name.
func (g *Gateway) replaceSink(s publish.Sink, res *ReloadResult) {
	if err := g.fanout.Replace(s); err != nil {
		// Only a bug gets here: the names and formats are the gateway's.
		g.logger.Error("replacing a sink", "sink", s.Name(), "err", err)
		return
	}
	res.SinksReplaced = append(res.SinksReplaced, s.Name())
}

// reloadable are the config keys a reload may change; every other key
// needs a restart (see restartOnly).
var reloadable = map[string]bool{"models": true, "sources": true, "sinks.mqtt": true, "sinks.kafka": true, "reload": true}

// restartOnly lists, each at its place in cfg, the settings that differ
// from the running config but cannot change while the gateway runs.
func (g *Gateway) restartOnly(cfg *Config, m *model.Model) model.Diagnostics {
	var diags model.Diagnostics
	old := g.applied.Load()
	// Compare copies without the defaults derived from other keys, so that
	// a change is reported once, at the key that was changed.
	a, b := *old, *cfg
	if !a.Store.Dir.Present() && !b.Store.Dir.Present() {
		a.Store.Dir.V, b.Store.Dir.V = "", "" // from data_dir
	}
	if a.EmbeddedBroker() != b.EmbeddedBroker() {
		a.Broker, b.Broker = nil, nil // see below
	}
	if sa, sb := a.Sinks.Sparkplug, b.Sinks.Sparkplug; sa != nil && sb != nil && !sa.EdgeNodeID.Present() && !sb.EdgeNodeID.Present() {
		x, y := *sa, *sb
		x.EdgeNodeID.V, y.EdgeNodeID.V = "", "" // from id
		a.Sinks.Sparkplug, b.Sinks.Sparkplug = &x, &y
	}
	diffKeys(&diags, "", cfg.Pos, reflect.ValueOf(a), reflect.ValueOf(b))

	if old.EmbeddedBroker() != cfg.EmbeddedBroker() {
		pos := cfg.Pos
		if cfg.Sinks.MQTT != nil {
			pos = cfg.Sinks.MQTT.Pos
		}
		diags.Add(pos, "sinks.mqtt: switching between the embedded broker and an external one needs a restart")
	}
	if om, nm := old.Sinks.MQTT, cfg.Sinks.MQTT; om != nil && nm != nil && om.QueueLen != nm.QueueLen {
		diags.Add(nm.Pos, "sinks.mqtt.queue_len: changing it needs a restart")
	}
	if old.Presence == cfg.Presence && old.ID == cfg.ID {
		if topic := presenceTopic(cfg, m); topic != g.presence {
			hint := "that needs a restart"
			if keep, ok := strings.CutSuffix(g.presence, "/_gateways/"+old.ID+"/status"); ok {
				hint += ", or set presence: " + keep + " in the config"
			}
			diags.Add(cfg.Pos, "presence: the gateway would announce itself on %s instead of %s (the model's first asset changed); %s",
				topic, g.presence, hint)
		}
	}
	// A Sparkplug sink without its own url uses the broker settings of
	// sinks.mqtt: a change there would change the edge node.
	if sp := cfg.Sinks.Sparkplug; sp != nil && old.Sinks.Sparkplug != nil && !sp.URL.Valid() {
		om, nm := old.Sinks.MQTT, cfg.Sinks.MQTT
		if om != nil && nm != nil && (om.URL.V != nm.URL.V || om.Username != nm.Username || om.Password != nm.Password || om.TLS != nm.TLS) {
			diags.Add(nm.Pos, "sinks.mqtt: the Sparkplug sink uses this broker too; changing its url, credentials or tls needs a restart")
		}
	}
	return diags
}

// diffKeys adds a diagnostic for each config key, by its YAML path, whose
// value differs between a and b, skipping the reloadable keys. pos is the
// nearest position known in b.
func diffKeys(diags *model.Diagnostics, path string, pos model.Pos, a, b reflect.Value) {
	if reloadable[path] {
		return
	}
	name := path
	if name == "" {
		name = "config"
	}
	switch {
	case a.Kind() == reflect.Pointer && a.Type().Elem().Kind() == reflect.Struct: // a section
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil():
			diags.Add(posIn(b.Elem(), pos), "%s: adding it needs a restart", name)
		case b.IsNil():
			diags.Add(pos, "%s: removing it needs a restart", name)
		default:
			diffKeys(diags, path, pos, a.Elem(), b.Elem())
		}
		return
	case a.Kind() == reflect.Struct:
		t := a.Type()
		if t == reflect.TypeFor[model.Pos]() {
			return
		}
		pos = posIn(b, pos)
		if _, isAt := t.FieldByName("V"); isAt && strings.HasPrefix(t.Name(), "At[") {
			diffKeys(diags, path, pos, a.FieldByName("V"), b.FieldByName("V"))
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || tag == "-" || f.Type == reflect.TypeFor[model.Pos]() {
				continue
			}
			sub := path
			if tag != "" {
				sub = strings.TrimPrefix(path+"."+tag, ".")
			}
			diffKeys(diags, sub, pos, a.Field(i), b.Field(i))
		}
		return
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		diags.Add(pos, "%s: changing it needs a restart", name)
	}
}

// posIn is the position a config struct v was decoded from, or else def.
func posIn(v reflect.Value, def model.Pos) model.Pos {
	if v.Kind() != reflect.Struct {
		return def
	}
	if f := v.FieldByName("Pos"); f.IsValid() && f.Type() == reflect.TypeFor[model.Pos]() {
		if p := f.Interface().(model.Pos); p.Line > 0 {
			return p
		}
	}
	return def
}
