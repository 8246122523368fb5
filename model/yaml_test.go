package model

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseYAML(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		diags string // joined diagnostics; "" = none
		nil_  bool   // want a nil node
	}{
		{"empty", "", "", true},
		{"comment only", "# nothing here\n\n", "", true},
		{"null document", "~\n", "", true},
		{"explicit document", "---\na: 1\n", "", false},
		{"mapping", "a: 1\n", "", false},
		{"second document", "a: 1\n---\nb: 2\n", "f.yaml:2:1: a second YAML document (---) is not allowed here; put it in its own file", true},
		{"syntax on first line", "a: b: c\n", "f.yaml:1: YAML syntax error: mapping values are not allowed in this context", true},
		{"syntax on line 3", "a: 1\nb: 2\nc: [1, 2\nd: 4\n", "f.yaml:3: YAML syntax error: did not find expected ',' or ']'", true},
		{"bad indentation", "a:\n  b: 1\n c: 2\n", "f.yaml:3: YAML syntax error: did not find expected key", true},
		{"tab", "a:\n\tb: 1\n", "f.yaml:2: YAML syntax error: found character that cannot start any token", true},
		{"unterminated quote", "a: 1\nb: \"x\n", "f.yaml:2: YAML syntax error: found unexpected end of stream", true},
		{"control char", "a: 1\nb: x\x01y\n", "f.yaml:2:5: YAML syntax error: control characters are not allowed", true},
		{"bad utf8", "a: 1\n\nb: \xff\n", "f.yaml:3:4: YAML syntax error: invalid leading UTF-8 octet", true},
		{"syntax in second document", "a: 1\n---\nb: [\n", "f.yaml:4: YAML syntax error: did not find expected node content", true},
		{"self alias", "a: &x [1, *x]\n", "f.yaml:1:11: alias *x refers to the node it is part of", true},
		{"unknown alias", "a: *x\n", "f.yaml:1: YAML syntax error: unknown anchor 'x' referenced", true},
		{"alias bomb", aliasBomb(), fmt.Sprintf("f.yaml:1:1: aliases expand to more than %d nodes", maxExpandedNodes), true},
		{"alias fine", "a: &x {b: 1}\nc: *x\nd: [*x, *x]\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ds := ParseYAML("f.yaml", []byte(tt.data))
			if got := joinDiags(ds); got != tt.diags {
				t.Errorf("diagnostics:\n got %s\nwant %s", got, tt.diags)
			}
			if (n == nil) != tt.nil_ {
				t.Errorf("node = %v, want nil: %v", n, tt.nil_)
			}
		})
	}
}

func aliasBomb() string {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

func joinDiags(ds Diagnostics) string {
	ds.Sort()
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, "\n")
}

// decodeString parses and decodes text into out, returning the sorted
// diagnostics one per line.
func decodeString(t *testing.T, text string, out any) string {
	t.Helper()
	n, ds := ParseYAML("c.yaml", []byte(text))
	if len(ds) > 0 {
		t.Fatalf("parse: %v", ds)
	}
	DecodeNode("c.yaml", n, out, &ds)
	return joinDiags(ds)
}

type innerCfg struct {
	Pos   Pos    `yaml:"-"`
	Host  string `yaml:"host" unsgate:"required"`
	Port  uint16 `yaml:"port,omitempty"`
	Speed int    `yaml:"speed"`
}

type common struct {
	ID   string `yaml:"id"`
	Tags []string
}

type colour int

func (c *colour) UnmarshalYAMLNode(file string, n *yaml.Node, diags *Diagnostics) {
	switch n.Value {
	case "red":
		*c = 1
	case "green":
		*c = 2
	default:
		diags.Add(NodePos(file, n), "%q is not a colour", n.Value)
	}
}

type cfg struct {
	common   `yaml:",inline"`
	Pos      Pos                  `yaml:"-"`
	Name     string               `yaml:"name" unsgate:"required"`
	Enabled  bool                 `yaml:"enabled"`
	Count    int8                 `yaml:"count"`
	Big      int64                `yaml:"big"`
	Small    uint8                `yaml:"small"`
	Ratio    float64              `yaml:"ratio"`
	Half     float32              `yaml:"half"`
	Every    time.Duration        `yaml:"every"`
	Maybe    *int                 `yaml:"maybe"`
	Inner    innerCfg             `yaml:"inner"`
	PInner   *innerCfg            `yaml:"pinner"`
	List     []innerCfg           `yaml:"list"`
	Labels   map[string]string    `yaml:"labels"`
	Codes    map[int]string       `yaml:"codes"`
	Raw      yaml.Node            `yaml:"raw"`
	RawPtr   *yaml.Node           `yaml:"rawptr"`
	Timeout  At[time.Duration]    `yaml:"timeout"`
	Ordered  OrderedMap[int]      `yaml:"ordered"`
	Param    Value                `yaml:"param"`
	Params   map[string]Value     `yaml:"params"`
	Anything any                  `yaml:"anything"`
	Addr     netip.Addr           `yaml:"addr"`
	Colour   colour               `yaml:"colour"`
	Nested   map[string][]float64 `yaml:"nested"`
	skipped  int
	Ignored  string `yaml:"-"`
}

func TestDecodeNodeValid(t *testing.T) {
	const text = `
id: gw1
tags: [a, b]
name: main
enabled: true
count: -128
big: 0x7fff_ffff_ffff_ffff
small: 255
ratio: 3
half: .5
every: 1m30s
maybe: 7
inner: {host: plc, port: 502}
pinner:
  host: other
list:
  - {host: a}
  - host: b
    speed: 0o17
labels: {x: "1", y: two}
codes: {1: one, 2: two}
raw: {any: [thing]}
rawptr: [1, 2]
timeout: 250ms
ordered: {z: 1, a: 2, m: 3}
param: 1.5
params: {i: -3, u: 18446744073709551615, f: 2.5, b: false, s: hello, n: ~, inf: .inf}
anything: {k: [1, two, 3.5, true, ~]}
addr: 10.0.0.1
colour: green
nested: {a: [1, 2.5]}
`
	var c cfg
	if d := decodeString(t, text, &c); d != "" {
		t.Fatalf("unexpected diagnostics:\n%s", d)
	}
	seven := 7
	checks := []struct {
		name      string
		got, want any
	}{
		{"id (inline)", c.ID, "gw1"},
		{"tags (inline)", c.Tags, []string{"a", "b"}},
		{"pos", c.Pos, Pos{"c.yaml", 2, 1}},
		{"name", c.Name, "main"},
		{"enabled", c.Enabled, true},
		{"count", c.Count, int8(-128)},
		{"big", c.Big, int64(math.MaxInt64)},
		{"small", c.Small, uint8(255)},
		{"ratio", c.Ratio, 3.0},
		{"half", c.Half, float32(0.5)},
		{"every", c.Every, 90 * time.Second},
		{"maybe", c.Maybe, &seven},
		{"inner", c.Inner, innerCfg{Pos: Pos{"c.yaml", 13, 8}, Host: "plc", Port: 502}},
		{"pinner", c.PInner, &innerCfg{Pos: Pos{"c.yaml", 15, 3}, Host: "other"}},
		{"list", c.List, []innerCfg{{Pos: Pos{"c.yaml", 17, 5}, Host: "a"}, {Pos: Pos{"c.yaml", 18, 5}, Host: "b", Speed: 15}}},
		{"labels", c.Labels, map[string]string{"x": "1", "y": "two"}},
		{"codes", c.Codes, map[int]string{1: "one", 2: "two"}},
		{"raw kind", c.Raw.Kind, yaml.MappingNode},
		{"rawptr line", c.RawPtr.Line, 23},
		{"timeout", c.Timeout, At[time.Duration]{V: 250 * time.Millisecond, Pos: Pos{"c.yaml", 24, 10}}},
		{"ordered keys", c.Ordered.Keys(), []string{"z", "a", "m"}},
		{"ordered entry", c.Ordered[1], KV[int]{Key: "a", KeyPos: Pos{"c.yaml", 25, 17}, Value: 2, ValuePos: Pos{"c.yaml", 25, 20}}},
		{"param", c.Param, FloatValue(1.5)},
		{"params", c.Params, map[string]Value{"i": IntValue(-3), "u": UintValue(math.MaxUint64), "f": FloatValue(2.5),
			"b": BoolValue(false), "s": StringValue("hello"), "n": Null(), "inf": FloatValue(math.Inf(1))}},
		{"anything", c.Anything, map[string]any{"k": []any{int64(1), "two", 3.5, true, nil}}},
		{"addr", c.Addr, netip.MustParseAddr("10.0.0.1")},
		{"colour", c.Colour, colour(2)},
		{"nested", c.Nested, map[string][]float64{"a": {1, 2.5}}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	if v, ok := c.Ordered.Get("m"); !ok || v != 3 {
		t.Errorf("Ordered.Get(m) = %v, %v", v, ok)
	}
	if _, ok := c.Ordered.Get("q"); ok {
		t.Error("Ordered.Get(q) found a missing key")
	}
	if !c.Timeout.Present() || !c.Timeout.Valid() || c.Timeout.Failed() {
		t.Errorf("Timeout flags wrong: %+v", c.Timeout)
	}
}

func TestDecodeNodeErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{"unknown key with suggestion", "name: x\nenabeld: true\n",
			`c.yaml:2:1: unknown key "enabeld" (did you mean "enabled"?)`},
		{"unknown key without suggestion", "name: x\nfrobnicate: 1\n",
			`c.yaml:2:1: unknown key "frobnicate"`},
		{"unknown key by prefix", "name: x\nenable: true\n",
			`c.yaml:2:1: unknown key "enable" (did you mean "enabled"?)`},
		{"missing required", "count: 1\n",
			`c.yaml:1:1: missing required key "name"`},
		{"missing required nested", "name: x\ninner: {port: 1}\n",
			`c.yaml:2:8: missing required key "host"`},
		{"required but null", "name: ~\n",
			`c.yaml:1:7: key "name" needs a value`},
		{"null struct still checks required", "name: x\ninner:\n",
			`c.yaml:2:7: missing required key "host"`},
		{"duplicate key", "name: x\ncount: 1\ncount: 2\n",
			`c.yaml:3:1: duplicate key "count" (first at line 2)`},
		{"duplicate map key", "name: x\ncodes: {1: a, 01: b}\n",
			`c.yaml:2:15: duplicate key "01" (first at line 2)`},
		{"not a number", "name: x\nratio: abc\n",
			`c.yaml:2:8: expected a number, got "abc"`},
		{"quoted number", "name: x\ncount: \"5\"\n",
			`c.yaml:2:8: expected an integer, got the quoted string "5"`},
		{"float for int", "name: x\ncount: 1.5\n",
			`c.yaml:2:8: expected an integer, got "1.5"`},
		{"int8 overflow", "name: x\ncount: 128\n",
			`c.yaml:2:8: number 128 is out of range (-128..127)`},
		{"uint8 overflow", "name: x\nsmall: 256\n",
			`c.yaml:2:8: number 256 is out of range (0..255)`},
		{"negative unsigned", "name: x\nsmall: -1\n",
			`c.yaml:2:8: number -1 is out of range (0..255)`},
		{"int64 overflow", "name: x\nbig: 9223372036854775808\n",
			`c.yaml:2:6: number 9223372036854775808 is out of range (-9223372036854775808..9223372036854775807)`},
		{"huge", "name: x\nbig: 99999999999999999999999\n",
			`c.yaml:2:6: number 99999999999999999999999 is out of range`},
		{"float32 overflow", "name: x\nhalf: 1e39\n",
			`c.yaml:2:7: number 1e39 is out of range for a 32-bit float`},
		{"bool", "name: x\nenabled: yes\n",
			`c.yaml:2:10: expected true or false, got "yes"`},
		{"duration", "name: x\nevery: 5\n",
			`c.yaml:2:8: expected a duration like 500ms or 1m30s, got "5"`},
		{"duration list", "name: x\nevery: [1s]\n",
			`c.yaml:2:8: expected a duration like 500ms or 1m30s, got a list`},
		{"string from mapping", "name: {a: 1}\n",
			`c.yaml:1:7: expected a text value, got a mapping`},
		{"list from scalar", "name: x\nlist: abc\n",
			`c.yaml:2:7: expected a list, got "abc"`},
		{"struct from list", "name: x\ninner: [1]\n",
			`c.yaml:2:8: expected a mapping, got a list`},
		{"map from scalar", "name: x\nlabels: 3\n",
			`c.yaml:2:9: expected a mapping, got "3"`},
		{"ordered from list", "name: x\nordered: [1]\n",
			`c.yaml:2:10: expected a mapping, got a list`},
		{"value from list", "name: x\nparam: [1]\n",
			`c.yaml:2:8: expected a single value, got a list`},
		{"text unmarshaler", "name: x\naddr: 10.0.0.300\n",
			`c.yaml:2:7: ParseAddr("10.0.0.300"): IPv4 field has value >255`},
		{"node unmarshaler", "name: x\ncolour: blue\n",
			`c.yaml:2:9: "blue" is not a colour`},
		{"non-scalar key", "name: x\nlabels: {[a]: b}\n",
			`c.yaml:2:10: mapping keys must be plain values, got a list`},
		{"long value shortened", "name: x\nratio: " + strings.Repeat("x", 60) + "\n",
			`c.yaml:2:8: expected a number, got "` + strings.Repeat("x", 37) + `..."`},
		{"top level not a mapping", "[1, 2]\n",
			`c.yaml:1:1: expected a mapping, got a list`},
		{"every problem at once", "nmae: 1\ncount: x\nevery: y\ninner: {hots: a}\n",
			"c.yaml:1:1: missing required key \"name\"\n" +
				"c.yaml:1:1: unknown key \"nmae\" (did you mean \"name\"?)\n" +
				"c.yaml:2:8: expected an integer, got \"x\"\n" +
				"c.yaml:3:8: expected a duration like 500ms or 1m30s, got \"y\"\n" +
				"c.yaml:4:8: missing required key \"host\"\n" +
				"c.yaml:4:9: unknown key \"hots\" (did you mean \"host\"?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cfg
			if got := decodeString(t, tt.text, &c); got != tt.want {
				t.Errorf("diagnostics:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestDecodeNodeAtFailed(t *testing.T) {
	var c struct {
		A At[int]           `yaml:"a"`
		B At[time.Duration] `yaml:"b"`
		C At[string]        `yaml:"c"`
	}
	if d := decodeString(t, "a: x\nb: ~\n", &c); d != `c.yaml:1:4: expected an integer, got "x"` {
		t.Fatalf("diagnostics: %s", d)
	}
	if !c.A.Present() || !c.A.Failed() || c.A.Valid() {
		t.Errorf("A: %+v: want present and failed", c.A)
	}
	if !c.B.Present() || c.B.Failed() || !c.B.Valid() || c.B.Pos != (Pos{"c.yaml", 2, 4}) {
		t.Errorf("B: %+v: want present, valid, at 2:4", c.B)
	}
	if c.C.Present() || c.C.Valid() {
		t.Errorf("C: %+v: want absent", c.C)
	}
}

func TestDecodeNodeMergeKeys(t *testing.T) {
	const text = `
base: &base {host: plc, port: 502, speed: 1}
more: &more {speed: 2}
name: x
inner:
  <<: *base
  port: 503
pinner:
  <<: [*more, *base]
`
	var c struct {
		Base  innerCfg  `yaml:"base"`
		More  yaml.Node `yaml:"more"`
		Name  string    `yaml:"name"`
		Inner innerCfg  `yaml:"inner"`
		P     innerCfg  `yaml:"pinner"`
	}
	if d := decodeString(t, text, &c); d != "" {
		t.Fatalf("diagnostics: %s", d)
	}
	if c.Inner.Host != "plc" || c.Inner.Port != 503 || c.Inner.Speed != 1 {
		t.Errorf("inner = %+v, want host plc, port 503 (explicit wins), speed 1", c.Inner)
	}
	if c.P.Host != "plc" || c.P.Port != 502 || c.P.Speed != 2 {
		t.Errorf("pinner = %+v, want speed 2 from the first merged mapping", c.P)
	}

	var bad struct{ Inner innerCfg }
	if d := decodeString(t, "inner:\n  <<: 5\n  host: a\n", &bad); d != `c.yaml:2:7: expected a mapping (or list of mappings) to merge, got "5"` {
		t.Errorf("diagnostics: %s", d)
	}
}

func TestDecodeNodeNil(t *testing.T) {
	var c cfg
	var ds Diagnostics
	DecodeNode("empty.yaml", nil, &c, &ds)
	if got := joinDiags(ds); got != `empty.yaml: missing required key "name"` {
		t.Errorf("diagnostics: %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("DecodeNode into a non-pointer did not panic")
		}
	}()
	DecodeNode("x.yaml", nil, c, &ds)
}

func TestSuggest(t *testing.T) {
	words := []string{"speed", "type", "tags", "params", "unit_id", "holding", "input", "coil", "discrete", "levels", "description"}
	tests := []struct{ word, want string }{
		{"spede", "speed"},  // swap
		{"sped", "speed"},   // deletion
		{"speeed", "speed"}, // insertion
		{"Type", "type"},    // case
		{"typ", "type"},
		{"tgas", "tags"},
		{"parms", "params"},
		{"unitid", "unit_id"},
		{"unit", "unit_id"}, // prefix
		{"desc", "description"},
		{"holdng", "holding"},
		{"levles", "levels"},
		{"xyz", ""},
		{"t", ""},  // too short for anything
		{"ab", ""}, // distance 2 from nothing useful
		{"completely-different", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Suggest(tt.word, words); got != tt.want {
			t.Errorf("Suggest(%q) = %q, want %q", tt.word, got, tt.want)
		}
	}
	// Ties are broken alphabetically, not by candidate order.
	if a, b := Suggest("cat", []string{"cot", "car"}), Suggest("cat", []string{"car", "cot"}); a != "car" || b != "car" {
		t.Errorf("tie: %q %q, want car", a, b)
	}
}

func TestDecodeNodeAliasKeys(t *testing.T) {
	var c struct {
		Names []string        `yaml:"names"`
		M     OrderedMap[int] `yaml:"m"`
	}
	if d := decodeString(t, "names: [&k speed]\nm: {*k : 1, other: 2}\n", &c); d != "" {
		t.Fatalf("diagnostics: %s", d)
	}
	if got := c.M.Keys(); !reflect.DeepEqual(got, []string{"speed", "other"}) {
		t.Errorf("keys = %q, want the alias resolved", got)
	}
}
