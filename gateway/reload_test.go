package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/publish/broker"
)

// connectCounter counts the connections of MQTT clients whose id starts
// with prefix, as the broker accepts them.
type connectCounter struct {
	mochi.HookBase
	prefix string
	n      atomic.Int64
}

func (h *connectCounter) ID() string           { return "connect-counter" }
func (h *connectCounter) Provides(b byte) bool { return b == mochi.OnConnect }
func (h *connectCounter) OnConnect(cl *mochi.Client, _ mpackets.Packet) error {
	if strings.HasPrefix(cl.ID, h.prefix) {
		h.n.Add(1)
	}
	return nil
}

// reloadRig is a gateway run from files on disk, publishing to an external
// broker that counts the gateway's connections.
type reloadRig struct {
	t        *testing.T
	dir      string
	g        *Gateway
	sub      *subscriber
	connects *connectCounter
	broker   string // host:port
}

// startReloadRig writes the config (with %[1]s for the broker's host:port)
// and the model files, loads them as `unsgate run` does and runs the
// gateway.
func startReloadRig(t *testing.T, config string, files map[string]string, setup ...func(*Config)) *reloadRig {
	t.Helper()
	r := &reloadRig{t: t, dir: t.TempDir(), connects: &connectCounter{prefix: "unsgate-"}}
	b, err := broker.StartWith(broker.Config{Addr: "127.0.0.1:0", Hooks: []mochi.Hook{r.connects}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.broker = b.Addr()
	for name, text := range files {
		r.write(name, text)
	}
	r.writeConfig(config)
	cfg, m, plan, err := Load(filepath.Join(r.dir, "gw.yaml"))
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	for _, f := range setup {
		f(cfg)
	}
	if r.g, err = New(cfg, m, plan, nil); err != nil {
		t.Fatalf("new: %v", err)
	}
	r.sub = subscribe(t, r.broker, "acme/#")
	runGateway(t, r.g)
	return r
}

// write replaces a file the way editors and git do: a new file renamed
// over the old one, so the watcher never reads half a file.
func (r *reloadRig) write(name, text string) {
	r.t.Helper()
	path := filepath.Join(r.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		r.t.Fatal(err)
	}
}

func (r *reloadRig) remove(name string) {
	r.t.Helper()
	if err := os.Remove(filepath.Join(r.dir, name)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *reloadRig) writeConfig(config string) { r.write("gw.yaml", fmt.Sprintf(config, r.broker)) }

// value waits until topic's latest message has value want and quality
// GOOD.
func (r *reloadRig) value(topic string, want any) {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, fmt.Sprintf("%s = %v", topic, want), func() bool {
		u, ok := r.sub.value(topic)
		return ok && u.Quality == "GOOD" && u.Value == want
	})
}

// reloaded waits until the model status reports a reload after since.
func (r *reloadRig) reloaded(since time.Time) ModelStatus {
	r.t.Helper()
	var st ModelStatus
	waitFor(r.t, 10*time.Second, "a reload", func() bool {
		st = r.g.ModelStatus()
		return st.LastReload.After(since)
	})
	return st
}

func (r *reloadRig) source(name string) SourceStats {
	r.t.Helper()
	for _, s := range r.g.Stats().Sources {
		if s.Name == name {
			return s
		}
	}
	r.t.Fatalf("no source %s in %+v", name, r.g.Stats().Sources)
	return SourceStats{}
}

func (r *reloadRig) sourceNames() []string {
	var names []string
	for _, s := range r.g.Stats().Sources {
		names = append(names, s.Name)
	}
	return names
}

const reloadConfig = `id: gw-test
models: [m.yaml]
shutdown_timeout: 3s
http: {listen: "127.0.0.1:0"}
reload: {interval: 20ms}
sources:
  plc1: {url: "%s", poll: 50ms, timeout: 300ms, backoff: {initial: 50ms, max: 200ms}}
sinks:
  mqtt: {url: "mqtt://%%[1]s"}
`

const reloadModelV1 = `base: acme/plant/water
types:
  Pump:
    tags:
      flow:     {address: "holding:0", type: uint16, expr: "raw / 10.0", unit: m3/h}
      per_hour: {expr: "flow * 2"}
assets:
  line1/pump1: {type: Pump, source: plc1}
`

const pump1 = "acme/plant/water/line1/pump1/"

// A valid change of the model files is picked up by the watcher and
// applied while the Modbus source and the MQTT sink, whose config did not
// change, keep their connections: a changed expression takes effect at
// once (the PLC's value did not change, and the derived tag is evaluated
// from the state carried over), a new tag appears.
func TestReloadValidChangeKeepsConnections(t *testing.T) {
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	r := startReloadRig(t, fmt.Sprintf(reloadConfig, plc.URL()), map[string]string{"m.yaml": reloadModelV1})
	r.value(pump1+"flow", 12.3)
	r.value(pump1+"per_hour", 24.6)
	before := r.g.ModelStatus()
	if plc.Connections() != 1 || r.source("plc1").Sessions != 1 || r.connects.n.Load() != 1 {
		t.Fatalf("before the reload: %d PLC connections, %d sessions, %d broker connects; want 1 each",
			plc.Connections(), r.source("plc1").Sessions, r.connects.n.Load())
	}

	since := time.Now()
	r.write("m.yaml", strings.Replace(reloadModelV1, `per_hour: {expr: "flow * 2"}`,
		"per_hour: {expr: \"flow * 4\"}\n      per_day:  {expr: \"flow * 8\"}", 1))
	st := r.reloaded(since)
	if st.LastResult != "ok" || len(st.Errors) != 0 || st.Version == before.Version || !st.LoadedAt.After(before.LoadedAt) {
		t.Fatalf("model status after a valid change: %+v (before %+v)", st, before)
	}
	r.value(pump1+"per_hour", 49.2)
	r.value(pump1+"per_day", 98.4)

	// Still the same connections, and still reading.
	plc.SetHolding(1, 0, 200)
	r.value(pump1+"per_hour", 80.0)
	if n := plc.Connections(); n != 1 {
		t.Errorf("the PLC saw %d connections; the unchanged source reconnected", n)
	}
	if s := r.source("plc1"); s.Sessions != 1 {
		t.Errorf("plc1 had %d sessions; want 1", s.Sessions)
	}
	if n := r.connects.n.Load(); n != 1 {
		t.Errorf("the broker saw %d connections from the gateway; the unchanged sink reconnected", n)
	}
}

// A broken model file is refused: the old model keeps running, and the
// model status shows the problems at their file:line:col. Fixing the file
// is picked up again.
func TestReloadInvalidChangeKeepsOldModel(t *testing.T) {
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	r := startReloadRig(t, fmt.Sprintf(reloadConfig, plc.URL()), map[string]string{"m.yaml": reloadModelV1})
	r.value(pump1+"per_hour", 24.6)
	before := r.g.ModelStatus()

	since := time.Now()
	r.write("m.yaml", strings.Replace(reloadModelV1, `expr: "flow * 2"`, `expr: "flw * 2"`, 1))
	st := r.reloaded(since)
	want := filepath.Join(r.dir, "m.yaml") + `:6:25: expression: unknown name "flw" (did you mean "flow"?)`
	if st.LastResult != "failed" || !slices.Contains(st.Errors, want) {
		t.Fatalf("model status after a broken change: %+v\nwant an error %q", st, want)
	}
	if st.Version != before.Version || !st.LoadedAt.Equal(before.LoadedAt) {
		t.Errorf("the failed reload changed the running model's status: %+v, before %+v", st, before)
	}
	plc.SetHolding(1, 0, 50)
	r.value(pump1+"per_hour", 10.0) // the old expression
	if n := plc.Connections(); n != 1 {
		t.Errorf("the PLC saw %d connections", n)
	}

	since = time.Now()
	r.write("m.yaml", strings.Replace(reloadModelV1, `expr: "flow * 2"`, `expr: "flow * 4"`, 1))
	if st := r.reloaded(since); st.LastResult != "ok" || len(st.Errors) != 0 {
		t.Fatalf("model status after the fix: %+v", st)
	}
	r.value(pump1+"per_hour", 20.0)
}

// A model and config change that moves a pump from one PLC to a new one:
// the PLC no tag reads any more is disconnected, the new one is started,
// the one that did not change keeps its connection.
func TestReloadSourceAddedAndRemoved(t *testing.T) {
	plc1, plc2, plc3 := listenPLC(t), listenPLC(t), listenPLC(t)
	plc1.SetHolding(1, 0, 10)
	plc2.SetHolding(1, 0, 20)
	plc3.SetHolding(1, 0, 30)
	config := `id: gw-test
models: [models]
shutdown_timeout: 3s
http: {listen: "127.0.0.1:0"}
reload: {watch: false}
sources:
  plc1: {url: "` + plc1.URL() + `", poll: 50ms, timeout: 300ms}
  %s: {url: "%s", poll: 50ms, timeout: 300ms}
sinks:
  mqtt: {url: "mqtt://%%[1]s"}
`
	asset := func(name, source string) string {
		return "base: acme/plant/water\nassets:\n  line1/" + name + ": {type: Pump, source: " + source + "}\n"
	}
	r := startReloadRig(t, fmt.Sprintf(config, "plc2", plc2.URL()), map[string]string{
		"models/types.yaml": "types:\n  Pump:\n    tags:\n      flow: {address: \"holding:0\", type: uint16}\n",
		"models/pump1.yaml": asset("pump1", "plc1"),
		"models/pump2.yaml": asset("pump2", "plc2"),
	})
	const pump2, pump3 = "acme/plant/water/line1/pump2/", "acme/plant/water/line1/pump3/"
	r.value(pump1+"flow", 10.0)
	r.value(pump2+"flow", 20.0)
	if got := r.sourceNames(); !slices.Equal(got, []string{"plc1", "plc2"}) {
		t.Fatalf("sources %v", got)
	}

	r.remove("models/pump2.yaml")
	r.write("models/pump3.yaml", asset("pump3", "plc3"))
	r.writeConfig(fmt.Sprintf(config, "plc3", plc3.URL()))
	res, err := r.g.ReloadFiles()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Kept, []string{"plc1"}) || !slices.Equal(res.Started, []string{"plc3"}) ||
		!slices.Equal(res.Stopped, []string{"plc2"}) || len(res.Restarted) != 0 || res.Tags != 2 {
		t.Fatalf("reload result %+v", res)
	}
	if got := r.sourceNames(); !slices.Equal(got, []string{"plc1", "plc3"}) {
		t.Fatalf("sources after the reload %v", got)
	}
	r.value(pump3+"flow", 30.0)
	plc1.SetHolding(1, 0, 11)
	r.value(pump1+"flow", 11.0)
	if n := plc1.Connections(); n != 1 || r.source("plc1").Sessions != 1 {
		t.Errorf("plc1: %d connections, %d sessions; want 1", n, r.source("plc1").Sessions)
	}

	// plc2 is no longer read: the requests it serves stop.
	served := plc2.Requests()
	plc1.SetHolding(1, 0, 12)
	r.value(pump1+"flow", 12.0) // a few polls later
	if n := plc2.Requests(); n != served {
		t.Errorf("plc2 served %d requests after it was removed", n-served)
	}
	if r.connects.n.Load() != 1 {
		t.Errorf("the sink reconnected: %d connects", r.connects.n.Load())
	}
}

// A changed source is restarted and a changed sink replaced, the sink
// keeping its queue; both come back and deliver.
func TestReloadChangedSourceAndSink(t *testing.T) {
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	config := fmt.Sprintf(reloadConfig, plc.URL())
	r := startReloadRig(t, config, map[string]string{"m.yaml": reloadModelV1})
	r.value(pump1+"flow", 12.3)

	r.writeConfig(strings.Replace(strings.Replace(config, "poll: 50ms", "poll: 60ms", 1),
		`mqtt: {url: "mqtt://%[1]s"}`, `mqtt: {url: "mqtt://%[1]s", keepalive: 20s}`, 1))
	res, err := r.g.ReloadFiles()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Restarted, []string{"plc1"}) || !slices.Equal(res.SinksReplaced, []string{"mqtt"}) {
		t.Fatalf("reload result %+v", res)
	}
	plc.SetHolding(1, 0, 77)
	r.value(pump1+"flow", 7.7)
	if n := r.connects.n.Load(); n != 2 {
		t.Errorf("broker connects %d, want 2 (the replaced sink's and the new one's)", n)
	}
	if n := plc.Connections(); n != 2 {
		t.Errorf("PLC connections %d, want 2", n)
	}
}

// Settings that cannot change at run time are refused, each named at its
// place, and nothing changes.
func TestReloadRestartOnlyRefused(t *testing.T) {
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	config := fmt.Sprintf(reloadConfig, plc.URL())
	r := startReloadRig(t, strings.Replace(config, "interval: 20ms", "watch: false", 1), map[string]string{"m.yaml": reloadModelV1})
	r.value(pump1+"flow", 12.3)

	changed := strings.NewReplacer("id: gw-test", "id: gw-other", "interval: 20ms", "watch: false",
		"shutdown_timeout: 3s", "shutdown_timeout: 3s\nstore: {max_bytes: 2MiB}").Replace(config)
	r.writeConfig(changed)
	_, err := r.g.ReloadFiles()
	gw := filepath.Join(r.dir, "gw.yaml")
	for _, want := range []string{gw + ":1:1: id: changing it needs a restart", gw + ":4:20: store.max_bytes: changing it needs a restart"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("reload error %v\nwant it to contain %q", err, want)
		}
	}
	st := r.g.ModelStatus()
	if st.LastResult != "failed" || len(st.Errors) != 2 {
		t.Errorf("model status %+v", st)
	}
	if r.g.cfg.ID != "gw-test" || r.g.applied.Load().ID != "gw-test" {
		t.Errorf("id changed to %s", r.g.applied.Load().ID)
	}
	plc.SetHolding(1, 0, 50)
	r.value(pump1+"per_hour", 10.0) // the old model
}

// A Kafka sink added by a reload starts delivering at once (its store is
// opened then); removed again, it leaves the fan-out. The MQTT sink is not
// touched either time.
func TestReloadAddsAndRemovesKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "uns.v1.values"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	config := strings.Replace(fmt.Sprintf(reloadConfig, plc.URL()), "interval: 20ms", "watch: false", 1)
	r := startReloadRig(t, config, map[string]string{"m.yaml": reloadModelV1})
	r.value(pump1+"flow", 12.3)

	r.writeConfig(config + "  kafka: {brokers: [\"" + cluster.ListenAddrs()[0] + "\"], linger: 5ms}\n")
	res, err := r.g.ReloadFiles()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.SinksAdded, []string{"kafka"}) || len(res.SinksReplaced) != 0 || !slices.Equal(res.Kept, []string{"plc1"}) {
		t.Fatalf("reload result %+v", res)
	}
	plc.SetHolding(1, 0, 321)
	r.value(pump1+"flow", 32.1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("uns.v1.values"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for found := false; !found; {
		if ctx.Err() != nil {
			t.Fatal("no record of the new flow value in Kafka")
		}
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
			found = found || string(rec.Key) == pump1+"flow" && strings.Contains(string(rec.Value), `"value":32.1`)
		})
	}

	r.writeConfig(config)
	if res, err = r.g.ReloadFiles(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.SinksRemoved, []string{"kafka"}) {
		t.Fatalf("reload result %+v", res)
	}
	var names []string
	for _, s := range r.g.Stats().Sinks {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"mqtt"}) {
		t.Errorf("sinks after the removal: %v", names)
	}
	if n := r.connects.n.Load(); n != 1 {
		t.Errorf("broker connects %d, want 1", n)
	}
}

// Each setting a running gateway cannot change is named, at its place.
func TestRestartOnlyKeys(t *testing.T) {
	base := "id: a\nmodels: [m]\n"
	for _, c := range []struct{ old, new, want string }{
		{base, base + "data_dir: /var/lib/x\n", "gw.yaml:1:1: data_dir: changing it needs a restart"},
		{base, base + "log_level: debug\n", "gw.yaml:1:1: log_level: changing it needs a restart"},
		{base, base + "broker: {listen: \"127.0.0.1:1884\"}\n", "gw.yaml:3:18: broker.listen: changing it needs a restart"},
		{base, base + "sinks: {mqtt: {url: \"mqtt://b\"}}\n", "gw.yaml:3:15: sinks.mqtt: switching between the embedded broker and an external one needs a restart"},
		{base + "sinks: {mqtt: {url: \"mqtt://b\"}}\n", base + "sinks: {mqtt: {url: \"mqtt://b\", queue_len: 5}}\n", "gw.yaml:3:15: sinks.mqtt.queue_len: changing it needs a restart"},
		{base, base + "sinks: {sparkplug: {}}\n", "gw.yaml:3:20: sinks.sparkplug: adding it needs a restart"},
		{base + "sinks: {sparkplug: {}}\n", base + "sinks: {sparkplug: {group_id: g}}\n", "gw.yaml:3:31: sinks.sparkplug.group_id: changing it needs a restart"},
		{base + "sinks: {sparkplug: {}, mqtt: {url: \"mqtt://b\"}}\n", base + "sinks: {sparkplug: {}, mqtt: {url: \"mqtt://c\"}}\n",
			"gw.yaml:3:30: sinks.mqtt: the Sparkplug sink uses this broker too; changing its url, credentials or tls needs a restart"},
		{base, base + "store: {disabled: true}\n", "gw.yaml:3:8: store.disabled: changing it needs a restart"},
		{base, base + "presence: acme/x\n", "gw.yaml:1:1: presence: changing it needs a restart"},
	} {
		old, err := ParseConfig("gw.yaml", []byte(c.old), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseConfig("gw.yaml", []byte(c.new), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		g := &Gateway{presence: presenceTopic(old, nil)}
		g.applied.Store(old)
		if got := g.restartOnly(cfg, nil).Err(); got == nil || got.Error() != c.want {
			t.Errorf("%q -> %q:\n got %v\nwant %s", c.old, c.new, got, c.want)
		}
	}
	// What a reload may change is not refused.
	old, _ := ParseConfig("gw.yaml", []byte(base), env(nil))
	cfg, err := ParseConfig("gw.yaml", []byte("id: a\nmodels: [m, n]\nreload: {watch: false}\n"+
		"sources: {p: {url: \"tcp://h:502\"}}\nsinks: {kafka: {brokers: [\"k:9092\"]}}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{presence: presenceTopic(old, nil)}
	g.applied.Store(old)
	if err := g.restartOnly(cfg, nil).Err(); err != nil {
		t.Errorf("reloadable keys refused: %v", err)
	}
}

// What the command line changed in the config (--http-listen) is applied
// to every config a reload reads; without that, the reload would see a
// restart-only change.
func TestReloadKeepsCommandLineOverride(t *testing.T) {
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 123)
	config := strings.Replace(fmt.Sprintf(reloadConfig, plc.URL()), "interval: 20ms", "watch: false", 1)
	flag := func(c *Config) error { return c.SetHTTPListen("localhost:0") }
	r := startReloadRig(t, config, map[string]string{"m.yaml": reloadModelV1}, func(c *Config) {
		if err := flag(c); err != nil {
			t.Fatal(err)
		}
	})
	r.value(pump1+"flow", 12.3)
	if _, err := r.g.ReloadFiles(); err == nil || !strings.Contains(err.Error(), "http.listen: changing it needs a restart") {
		t.Fatalf("reload without the override: %v", err)
	}
	r.g.SetConfigOverride(flag)
	if _, err := r.g.ReloadFiles(); err != nil {
		t.Fatalf("reload with the override: %v", err)
	}
}
