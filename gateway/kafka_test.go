package gateway

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/unsgate/unsgate/model"
)

// The gateway with both sinks publishes the same points, as the same
// bytes, to the embedded MQTT broker and to Kafka (value topic, route and
// state topic), with the headers Kafka consumers rely on.
func TestGatewayPublishesToMQTTAndKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(3, "uns.v1.values", "uns.v1.pump2", "uns.v1.state"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	plc1 := listenPLC(t)
	plc2 := listenPLC(t)
	plc1.SetHolding(1, 0, 123)
	plc2.SetHolding(1, 0, 456)

	text := "id: gw-test\nmodels: [m.yaml]\nshutdown_timeout: 3s\nbroker: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\nsources:\n" +
		"  plc1: {url: \"" + plc1.URL() + "\", poll: 100ms, timeout: 300ms}\n" +
		"  plc2: {url: \"" + plc2.URL() + "\", poll: 100ms, timeout: 300ms}\n" +
		"sinks:\n  kafka:\n    brokers: [\"" + cluster.ListenAddrs()[0] + "\"]\n" +
		"    routes: [{match: \"+/+/+/+/pump2/#\", topic: uns.v1.pump2}]\n" +
		"    state_topic: uns.v1.state\n    linger: 5ms\n"
	cfg, err := ParseConfig(filepath.Join(t.TempDir(), "gw.yaml"), []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	files := []model.File{{Name: "m.yaml", Data: []byte(pumpModel)}}
	m, err := model.LoadFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	m, plan, err := CompileModel(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, m, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	version := ModelFilesVersion(files)
	g.SetModelVersion(version)
	runGateway(t, g)
	sub := subscribe(t, g.BrokerAddr(), "acme/#")

	const flow1 = "acme/plant/water/line1/pump1/flow"
	const flow2 = "acme/plant/water/line1/pump2/flow"
	waitFor(t, 10*time.Second, "both flows on MQTT", func() bool {
		_, ok1 := sub.raw(flow1)
		_, ok2 := sub.raw(flow2)
		return ok1 && ok2
	})

	read := func(topic string, keys ...string) map[string]*kgo.Record {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		got := map[string]*kgo.Record{}
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		for rctx.Err() == nil {
			cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) { got[string(r.Key)] = r })
			all := true
			for _, k := range keys {
				all = all && got[k] != nil
			}
			if all {
				return got
			}
		}
		t.Fatalf("%s: keys %v not all read; got %d keys", topic, keys, len(got))
		return nil
	}
	values := read("uns.v1.values", flow1)
	if _, ok := values[flow2]; ok {
		t.Errorf("pump2 went to the default topic despite its route")
	}
	routed := read("uns.v1.pump2", flow2)
	state := read("uns.v1.state", flow1, flow2)

	for _, c := range []struct {
		rec   *kgo.Record
		topic string
	}{{values[flow1], flow1}, {routed[flow2], flow2}, {state[flow1], flow1}} {
		hist := sub.history(c.topic)
		same := false
		for _, h := range hist {
			same = same || string(h.Payload) == string(c.rec.Value)
		}
		if !same {
			t.Errorf("%s: Kafka value %s is none of the MQTT payloads %v", c.topic, c.rec.Value, hist)
		}
		h := map[string]string{}
		for _, kv := range c.rec.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h["content-type"] != "application/json" || h["quality"] != "GOOD" || h["gateway"] != "gw-test" ||
			h["model_version"] != version || h["timestamp_ms"] == "" {
			t.Errorf("%s: headers %v (model version %s)", c.topic, h, version)
		}
		if !strings.Contains(string(c.rec.Value), `"timestamp_ms":`+h["timestamp_ms"]) {
			t.Errorf("%s: timestamp_ms header %s differs from the payload %s", c.topic, h["timestamp_ms"], c.rec.Value)
		}
	}

	names := map[string]bool{}
	for _, st := range g.fanout.Stats() {
		names[st.Name] = st.Connected
	}
	if !names["mqtt"] || !names["kafka"] {
		t.Errorf("sinks connected: %v, want mqtt and kafka", names)
	}
}

// unsgate demo --kafka-brokers: the banner names Kafka, and the demo's
// values arrive there keyed by their UNS path.
func TestDemoWithKafka(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "uns.v1.values"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the demo's own cleanup has stopped it
	var banner strings.Builder
	startDemo(t, DemoOptions{KafkaBrokers: cluster.ListenAddrs(), Out: &banner, Seed: 3})
	if !strings.Contains(banner.String(), "Kafka          "+cluster.ListenAddrs()[0]) {
		t.Errorf("banner does not name Kafka:\n%s", banner.String())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("uns.v1.values"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const speed = "acme/munich/bottling/line1/filler1/speed"
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer rcancel()
	for found := false; !found; {
		if rctx.Err() != nil {
			t.Fatalf("no record for %s", speed)
		}
		cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) { found = found || string(r.Key) == speed })
	}
}
