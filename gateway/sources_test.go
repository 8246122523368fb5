package gateway

import (
	"strings"
	"testing"
)

// A source is kept across a reload exactly when its spec, tags included,
// is unchanged, although a running source's spec keeps only a digest of
// its tags.
func TestSourceSpecEqual(t *testing.T) {
	// One data_dir for every load, as a reload of the same file has (the
	// OPC UA config holds paths in it).
	cfgText := `id: gw
models: [m.yaml]
data_dir: ` + t.TempDir() + `
http: {disabled: true}
sources:
  plc1: {url: "tcp://127.0.0.1:1502", poll: 50ms}
  ua1: {url: "opc.tcp://127.0.0.1:4840", poll: 1s}
`
	const modelText = `base: acme/plant/water
types:
  Pump:
    tags:
      flow:  {address: "holding:0", type: uint16, expr: "raw / 10.0", unit: m3/h}
      speed: {address: "holding:1", type: int16}
  Valve:
    tags:
      open: {address: "ns=2;s=Valve.Open"}
assets:
  line1/pump1: {type: Pump, source: plc1}
  line1/valve1: {type: Valve, source: ua1}
`
	specsOf := func(modelText string) map[string]sourceSpec {
		t.Helper()
		cfg, _, plan := compileGateway(t, cfgText, modelText, nil)
		specs, err := sourceSpecs(cfg, plan)
		if err != nil {
			t.Fatal(err)
		}
		return specs
	}
	running := specsOf(modelText)
	for name, s := range running {
		running[name] = s.withoutTags() // as a sourceRun keeps it
	}
	for _, tc := range []struct {
		name, from, to string
		changed        []string
	}{
		{"same model", "", "", nil},
		{"unit only", "unit: m3/h", "unit: l/s", nil}, // harmonize's business, not the source's
		{"register", `"holding:1"`, `"holding:2"`, []string{"plc1"}},
		{"raw type", "type: int16", "type: uint16", []string{"plc1"}},
		{"tag poll", "type: int16}", "type: int16, poll: 10ms}", []string{"plc1"}},
		{"node id", "Valve.Open", "Valve.Closed", []string{"ua1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := specsOf(strings.Replace(modelText, tc.from, tc.to, 1))
			for _, name := range []string{"plc1", "ua1"} {
				want := !strings.Contains(strings.Join(tc.changed, ","), name)
				if got := running[name].equal(next[name]); got != want {
					t.Errorf("%s: equal = %v, want %v", name, got, want)
				}
				if next[name].modbus == nil && next[name].opcua == nil {
					t.Fatalf("%s: no connector config", name)
				}
			}
		})
	}
}
