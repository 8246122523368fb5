package gateway

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestConfigEnvExpansionAndDefaults(t *testing.T) {
	text := `id: edge-01
models: [models/]
sources:
  plc1:
    url: tcp://127.0.0.1:${PLC_PORT}
    poll: 250ms
sinks:
  mqtt:
    url: mqtt://127.0.0.1:1883
    username: ${MQTT_USER}
    password: "${MQTT_PASSWORD:-fallback}"
`
	cfg, err := ParseConfig("/etc/unsgate/gw.yaml", []byte(text), env(map[string]string{"PLC_PORT": "5020", "MQTT_USER": "line1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sources["plc1"].URL.V; got != "tcp://127.0.0.1:5020" {
		t.Errorf("url = %q", got)
	}
	if cfg.Sources["plc1"].Poll != 250*time.Millisecond {
		t.Errorf("poll = %v", cfg.Sources["plc1"].Poll)
	}
	m := cfg.Sinks.MQTT
	if m.Username != "line1" || m.Password != "fallback" {
		t.Errorf("user/password = %q/%q", m.Username, m.Password)
	}
	if m.ClientID != "unsgate-edge-01" {
		t.Errorf("client id = %q", m.ClientID)
	}
	if cfg.Models[0] != "/etc/unsgate/models" {
		t.Errorf("models path not resolved against the config's folder: %q", cfg.Models[0])
	}
	if cfg.Broker != nil {
		t.Errorf("embedded broker configured although sinks.mqtt is set")
	}
}

func TestConfigEmbeddedBrokerDefault(t *testing.T) {
	cfg, err := ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker == nil || cfg.Broker.Listen.V != DefaultBrokerListen {
		t.Fatalf("broker = %+v, want listen %s", cfg.Broker, DefaultBrokerListen)
	}
}

// Every mistake is reported at once, each with its position.
func TestConfigErrors(t *testing.T) {
	text := `id: "edge 01"
modles: [m]
sources:
  plc1: {url: "opc.tcp://x:4840", unit_id: 2, mode: push}
  plc0: {url: "opc.tcp://y", security_policy: Basic128Rsa15}
  plc2:
    url: tcp://host
    unit_id: 300
    poll: soon
  plc3:
    url: tcp://h:502
    backoff: {initial: 10s, max: 1s}
sinks:
  mqtt:
    url: http://broker
    password: ${NOPE}
broker:
  listen: 127.0.0.1:1883
`
	_, err := ParseConfig("gw.yaml", []byte(text), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		`gw.yaml:2:1: unknown key "modles" (did you mean "models"?)`,
		`gw.yaml:9:11:`, // poll: soon
		`gw.yaml:16:15: environment variable NOPE is not set`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if t.Failed() {
		return
	}
	// The decode errors stop validation; fix them and the rest shows up.
	text = strings.Replace(strings.Replace(strings.Replace(text, "modles", "models", 1), "soon", "1s", 1), "${NOPE}", "x", 1)
	_, err = ParseConfig("gw.yaml", []byte(text), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	got = err.Error()
	for _, want := range []string{
		`id "edge 01"`,
		`gw.yaml:4:44: sources.plc1.unit_id: only applies to Modbus sources (tcp://); this source is OPC UA`,
		`gw.yaml:4:53: sources.plc1.mode: unknown mode "push"; use subscribe or poll`,
		// the connector's security rules, at the key they are about
		`gw.yaml:5:47: sources.plc0: security_policy Basic128Rsa15 is deprecated`,
		`sources.plc2.url "tcp://host": want tcp://host:port`,
		`sources.plc2.unit_id 300: must be 0..255`,
		`sources.plc3.backoff: initial 10s is longer than max 1s`,
		`sinks.mqtt.url "http://broker": scheme must be mqtt:// or mqtts://`,
		`broker: the embedded broker runs only when no sink names an MQTT broker`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	for _, line := range strings.Split(got, "\n") {
		if !strings.HasPrefix(line, "gw.yaml:") {
			t.Errorf("diagnostic without position: %q", line)
		}
	}
}

// Any bytes: never a panic; an error is Diagnostics with positions.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"id: a\nmodels: [m]\n",
		"id: a\nmodels: [m]\nsources:\n  p: {url: \"tcp://h:502\", poll: 1s}\n",
		"id: a\nmodels: [m]\nsinks:\n  mqtt: {url: \"mqtts://b:8883\", password: ${P}}\n",
		"id: [\n",
		"sources: 3\n",
		"id: a\nmodels: [m]\nbroker: {listen: \"::::\"}\n",
		"&a [*a]\n",
		"id: a\nmodels: [m]\nsinks:\n  kafka: {brokers: [\"k:9092\"], routes: [{match: \"a/#\", topic: t}], sasl: {mechanism: PLAIN, username: u}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("f.yaml", data, env(map[string]string{"P": "x"}))
		if err == nil {
			if cfg == nil || cfg.ID == "" {
				t.Fatalf("accepted config without id: %+v", cfg)
			}
			return
		}
		var ds model.Diagnostics
		if !errors.As(err, &ds) {
			t.Fatalf("error is %T, not Diagnostics: %v", err, err)
		}
		for _, d := range ds {
			if d.Pos.File != "f.yaml" {
				t.Fatalf("diagnostic without the file: %v", d)
			}
		}
	})
}

// -1 turns gap bridging and stale marking off (devices that refuse reads of
// unmapped registers); below that is an error.
func TestConfigDisableGapBridgingAndStale(t *testing.T) {
	text := "id: gw\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:502\", max_gap: -1, max_bit_gap: -1, stale_after: -1}\n"
	cfg, err := ParseConfig("gw.yaml", []byte(text), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Sources["plc1"]; s.MaxGap.V != -1 || s.MaxBitGap.V != -1 || s.StaleAfter.V != -1 {
		t.Errorf("source = %+v", s)
	}
	text = strings.Replace(text, "max_gap: -1", "max_gap: -2", 1)
	if _, err := ParseConfig("gw.yaml", []byte(text), env(nil)); err == nil || !strings.Contains(err.Error(), "use -1 to turn it off") {
		t.Errorf("max_gap -2 accepted or unclear: %v", err)
	}
}

// sinks.kafka: every key decoded, ${VAR} in the password, defaults, and
// the embedded broker still there without sinks.mqtt.
func TestConfigKafka(t *testing.T) {
	text := `id: edge-01
models: [models/]
sinks:
  kafka:
    brokers: ["k1:9092", "k2:9093"]
    tls: {ca_file: ca.pem, server_name: kafka.local}
    sasl: {mechanism: SCRAM-SHA-512, username: gw, password: "${KAFKA_PASSWORD}"}
    topic: plant.values
    routes:
      - {match: "acme/munich/bottling/#", topic: uns.v1.bottling}
      - {match: "+/+/packaging/#", topic: uns.v1.packaging}
    state_topic: uns.v1.state
    compression: zstd
    linger: 20ms
    batch_bytes: 262144
`
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/ca.pem", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(dir+"/gw.yaml", []byte(text), env(map[string]string{"KAFKA_PASSWORD": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Sinks.Kafka
	if len(k.Brokers) != 2 || k.Brokers[1].V != "k2:9093" || k.SASL.Password != "s3cret" || k.SASL.Mechanism.V != "SCRAM-SHA-512" ||
		k.TLS.CAFile != dir+"/ca.pem" || k.TLS.ServerName != "kafka.local" || k.Topic.V != "plant.values" ||
		len(k.Routes) != 2 || k.Routes[1].Topic.V != "uns.v1.packaging" || k.StateTopic.V != "uns.v1.state" ||
		k.Compression.V != "zstd" || k.Linger.V != 20*time.Millisecond || k.BatchBytes.V != 262144 || k.ClientID != "unsgate-edge-01" {
		t.Errorf("kafka config %+v", k)
	}
	if cfg.Broker == nil || cfg.Broker.Listen.V != DefaultBrokerListen {
		t.Errorf("without sinks.mqtt the embedded broker must still run: %+v", cfg.Broker)
	}
}

// Each mistake in sinks.kafka is reported at its key, all at once.
func TestConfigKafkaErrors(t *testing.T) {
	text := `id: gw
models: [m]
sinks:
  kafka:
    brokers: ["k1", "k2:9092"]
    sasl: {mechanism: GSSAPI, username: gw}
    topic: "uns values"
    routes:
      - {match: "acme/#/bottling", topic: uns.v1.bottling}
      - {match: "a/+", topic: "bad/topic"}
    compression: snappy
    linger: -1s
    batch_bytes: -5
    tls: {cert_file: c.pem}
`
	wantConfigErrors(t, text,
		`gw.yaml:5:15: sinks.kafka.brokers: broker "k1": want host:port`,
		`gw.yaml:6:23: sinks.kafka.sasl: SASL mechanism "GSSAPI": want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`,
		`gw.yaml:7:12: sinks.kafka.topic: topic name "uns values": only letters, digits`,
		`gw.yaml:9:17: sinks.kafka.routes[0].match "acme/#/bottling": '#' must be the last level`,
		`gw.yaml:10:31: sinks.kafka.routes[1].topic: topic name "bad/topic"`,
		`gw.yaml:11:18: sinks.kafka.compression "snappy": want one of none, gzip, lz4, zstd`,
		`gw.yaml:12:13: sinks.kafka.linger -1s`,
		`gw.yaml:13:18: sinks.kafka.batch_bytes -5`,
		`gw.yaml:14:10: sinks.kafka.tls: cert_file and key_file go together`,
	)

	_, err := ParseConfig("gw.yaml", []byte("id: gw\nmodels: [m]\nsinks:\n  kafka:\n    brokers: []\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:5:5: sinks.kafka.brokers: name at least one seed broker") {
		t.Errorf("empty brokers: %v", err)
	}
	_, err = ParseConfig("gw.yaml", []byte("id: gw\nmodels: [m]\nsinks:\n  kafka:\n    brokers: [\"k:9092\"]\n    sasl: {mechanism: PLAIN}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), `gw.yaml:6:11: missing required key "username"`) {
		t.Errorf("missing username: %v", err)
	}
}

// store: defaults under data_dir, sizes with units, sync as a duration or
// always, and positioned errors.
func TestConfigStore(t *testing.T) {
	cfg, err := ParseConfig("/srv/gw/gw.yaml", []byte("id: a\nmodels: [m]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	dir, opts, ok := cfg.Store.StoreOptions()
	if !ok || dir != "/srv/gw/data/queue" || opts.MaxBytes != 1<<30 || opts.SyncEvery != time.Second {
		t.Fatalf("defaults: %q %+v %v", dir, opts, ok)
	}

	cfg, err = ParseConfig("/srv/gw/gw.yaml", []byte("id: a\nmodels: [m]\nstore: {dir: spool, max_bytes: 512MB, sync: always}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	dir, opts, ok = cfg.Store.StoreOptions()
	if !ok || dir != "/srv/gw/spool" || opts.MaxBytes != 512e6 || opts.SyncEvery >= 0 {
		t.Fatalf("set: %q %+v %v", dir, opts, ok)
	}
	cfg, err = ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\nstore: {disabled: true}\n"), env(nil))
	if _, _, ok := cfg.Store.StoreOptions(); err != nil || ok {
		t.Fatalf("disabled: %v %v", err, ok)
	}

	_, err = ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\nstore:\n  max_bytes: 2 parsecs\n  sync: soon\n"), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`gw.yaml:4:14: store.max_bytes "2 parsecs": unknown unit "parsecs"`,
		`gw.yaml:5:9: store.sync "soon": want a duration such as 1s, or always`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\nstore: {max_bytes: 1000}\n"), env(nil)); err == nil || !strings.Contains(err.Error(), "at least 1MiB") {
		t.Fatalf("tiny budget: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "1KiB": 1024, "1.5GiB": 3 << 29, "500MB": 500e6, "2 GB": 2e9, "7B": 7} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1MB", "1 XB", "1e99TB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) accepted", in)
		}
	}
}

func TestConfigReload(t *testing.T) {
	cfg, err := ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if d, on := cfg.Reload.watching(); d != DefaultReloadInterval || !on {
		t.Errorf("default: every %v, watching %v; want every %v, watching", d, on, DefaultReloadInterval)
	}
	cfg, err = ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\nreload: {watch: false, interval: 500ms}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if d, on := cfg.Reload.watching(); d != 500*time.Millisecond || on {
		t.Errorf("every %v, watching %v; want every 500ms, not watching", d, on)
	}
	_, err = ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\nreload:\n  interval: 1ms\n"), env(nil))
	if want := "gw.yaml:4:3: reload.interval 1ms: at least 10ms (the default is 2s)"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// wantConfigErrors parses text as gw.yaml and fails the test unless it is
// refused with every one of wants in the error, and every line of the error
// names its place in gw.yaml.
func wantConfigErrors(t *testing.T, text string, wants ...string) {
	t.Helper()
	_, err := ParseConfig("gw.yaml", []byte(text), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	for _, line := range strings.Split(got, "\n") {
		if !strings.HasPrefix(line, "gw.yaml:") {
			t.Errorf("diagnostic without position: %q", line)
		}
	}
}
