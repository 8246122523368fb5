package model

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/validate")

const validateDir = "../testdata/validate"

// TestValidate runs every case under testdata/validate: the case's *.yaml
// files (sorted, named by base name) are loaded together and the result, the
// diagnostics or a dump of the resolved model, is compared with want.txt.
func TestValidate(t *testing.T) {
	cases, err := os.ReadDir(validateDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		n++
		t.Run(c.Name(), func(t *testing.T) {
			dir := filepath.Join(validateDir, c.Name())
			names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if len(names) == 0 {
				t.Fatalf("no *.yaml in %s", dir)
			}
			slices.Sort(names)
			var files []File
			for _, name := range names {
				data, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, File{Name: filepath.Base(name), Data: data})
			}
			m, err := LoadFiles(files)
			got := describeResult(m, err)
			golden := filepath.Join(dir, "want.txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./model -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("result differs from %s (rerun with -update after checking):\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
	if n < 4 {
		t.Fatalf("only %d cases found in %s", n, validateDir)
	}
}

func describeResult(m *Model, err error) string {
	if err != nil {
		var ds Diagnostics
		if !errors.As(err, &ds) {
			return "error: " + err.Error() + "\n"
		}
		if m == nil {
			return "BUG: no partial model returned with the errors\n" + err.Error() + "\n"
		}
		return err.Error() + "\n"
	}
	return "OK\n" + dumpModel(m)
}

// dumpModel prints everything Load resolved, one line per fact, for golden
// comparison.
func dumpModel(m *Model) string {
	var b strings.Builder
	fmt.Fprintf(&b, "files: %s\n", strings.Join(m.Files, " "))
	fmt.Fprintf(&b, "levels: %s\n", strings.Join(m.Levels, "/"))
	for _, a := range m.Assets {
		fmt.Fprintf(&b, "asset %s type=%s source=%q (at %s) unit=%d poll=%s pos=%s\n",
			a.Path, a.Type, a.Source, a.SourcePos, a.UnitID, a.Poll, a.Pos)
		keys := make([]string, 0, len(a.Params))
		for k := range a.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := a.Params[k]
			fmt.Fprintf(&b, "  param %s = %s (%s)\n", k, v, v.Kind())
		}
		for _, tag := range a.Tags {
			fmt.Fprintf(&b, "  tag %s\n", tag.Topic)
			fmt.Fprintf(&b, "    name=%s pos=%s\n", tag.Name, tag.Pos)
			if tag.Address != nil {
				fmt.Fprintf(&b, "    address %q %s key=%s\n", tag.Address.Text, tag.Address.Protocol, tag.Address.Key)
			}
			if tag.Expr != "" {
				fmt.Fprintf(&b, "    expr %q at %s\n", tag.Expr, tag.ExprPos)
			}
			if tag.Enum != nil {
				ks := make([]int64, 0, len(tag.Enum))
				for k := range tag.Enum {
					ks = append(ks, k)
				}
				slices.Sort(ks)
				var parts []string
				for _, k := range ks {
					parts = append(parts, strconv.FormatInt(k, 10)+":"+tag.Enum[k])
				}
				fmt.Fprintf(&b, "    enum {%s}\n", strings.Join(parts, ", "))
			}
			fmt.Fprintf(&b, "    datatype=%s unit=%q deadband=%g percent=%v on_change=%v heartbeat=%s poll=%s\n",
				tag.TypeName(), tag.Unit, tag.Deadband.Value, tag.Deadband.Percent, tag.OnChange, tag.Heartbeat, tag.Poll)
			if tag.Description != "" {
				fmt.Fprintf(&b, "    description %q\n", tag.Description)
			}
		}
	}
	return b.String()
}

func TestBottlingExample(t *testing.T) {
	m, err := Load("../models")
	if err != nil {
		t.Fatalf("models/ does not load:\n%v", err)
	}
	if len(m.Files) == 0 || m.Files[0] != filepath.Join("..", "models", "bottling.yaml") {
		t.Errorf("Files = %q, want the paths as given", m.Files)
	}
	keys := map[string]string{}
	for _, a := range m.Assets {
		switch {
		case strings.Contains(a.Path, "/line1/") && (a.Source != "plc1" || a.UnitID != 1):
			t.Errorf("%s: source %q unit %d, want plc1 unit 1", a.Path, a.Source, a.UnitID)
		case strings.Contains(a.Path, "/line2/") && a.Source != "ua1":
			t.Errorf("%s: source %q, want ua1", a.Path, a.Source)
		}
		for _, tag := range a.Tags {
			if tag.Address != nil {
				keys[tag.Topic] = tag.Address.Key
			} else {
				keys[tag.Topic] = "derived:" + tag.Expr
			}
		}
	}
	// The register layout the simulated PLC serves; the demo breaks if
	// these drift apart.
	const p = "acme/munich/bottling/line1/"
	want := map[string]string{
		p + "filler1/speed":         "u1:holding:0:uint16",
		p + "filler1/temperature":   "u1:holding:1:int16",
		p + "filler1/state":         "u1:holding:2:uint16",
		p + "filler1/counters/good": "u1:holding:4:uint32:ABCD",
		p + "filler1/counters/bad":  "u1:holding:6:uint32:ABCD",
		p + "filler1/fill_level":    "u1:holding:8:float32:CDAB",
		p + "filler1/door_open":     "u1:holding:10.0:bool",
		p + "filler1/motor_on":      "u1:coil:0:bool",
		p + "filler2/speed":         "u1:holding:100:uint16",
		p + "filler2/temperature":   "u1:holding:101:int16",
		p + "filler2/state":         "u1:holding:102:uint16",
		p + "filler2/counters/good": "u1:holding:104:uint32:ABCD",
		p + "filler2/counters/bad":  "u1:holding:106:uint32:ABCD",
		p + "filler2/fill_level":    "u1:holding:108:float32:CDAB",
		p + "filler2/door_open":     "u1:holding:110.0:bool",
		p + "filler2/motor_on":      "u1:coil:100:bool",
		p + "capper1/torque":        "u1:holding:200:float32:ABCD",
		p + "capper1/caps_applied":  "u1:holding:202:uint32:ABCD",
		p + "capper1/state":         "u1:holding:204:uint16",
		p + "capper1/jam":           "u1:discrete:200:bool",
		p + "capper1/runtime":       "u1:holding:206:uint64:ABCD",
		p + "capper1/recipe":        "u1:holding:210:string:8",
	}
	// Line 2: the nodes the simulated OPC UA server serves, by namespace
	// URI and by browse path ({node} filled in per instance).
	const p2 = "acme/munich/bottling/line2/"
	want2 := map[string]string{
		p2 + "filler1/speed":        "nsu=urn:unsgate:sim;s=Line2.Filler1.Speed",
		p2 + "filler2/speed":        "nsu=urn:unsgate:sim;s=Line2.Filler2.Speed",
		p2 + "filler2/running":      "/Objects/Line2/Filler2/Running",
		p2 + "filler1/head_weights": "nsu=urn:unsgate:sim;s=Line2.Filler1.HeadWeights",
		p2 + "capper1/runtime":      "nsu=urn:unsgate:sim;s=Line2.Capper1.Runtime",
	}
	for topic, key := range want2 {
		if keys[topic] != key {
			t.Errorf("%s: key %q, want %q", topic, keys[topic], key)
		}
	}
	line2 := 0
	for topic := range keys {
		if strings.HasPrefix(topic, p2) {
			line2++
		}
	}
	for topic, key := range want {
		if keys[topic] != key {
			t.Errorf("%s: key %q, want %q", topic, keys[topic], key)
		}
	}
	for _, f := range []string{"filler1", "filler2"} {
		if got := keys[p+f+"/yield"]; !strings.HasPrefix(got, "derived:") {
			t.Errorf("%s/yield: %q, want a derived tag", f, got)
		}
	}
	if len(keys)-line2 != len(want)+2 {
		t.Errorf("%d line 1 tags, want %d", len(keys)-line2, len(want)+2)
	}
	if line2 != 2*13+5 { // 13 per filler, 5 for the capper
		t.Errorf("%d line 2 tags, want %d", line2, 2*13+5)
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("models/types.yaml", "types:\n  Pump:\n    tags:\n      flow: {address: \"input:0\"}\n")
	write("models/site/b.yml", "base: acme/munich/water\nassets:\n  line1/pump2: {type: Pump, source: plc1}\n")
	write("models/a.yaml", "base: acme/munich/water\nassets:\n  line1/pump1: {type: Pump, source: plc1}\n")
	write("models/README.md", "not a model")
	write("models/.git/x.yaml", "this: [is not loaded")
	write("empty/notes.txt", "")
	write("broken.yaml", "assets:\n  x: {type: Nope}\n")

	// Relative paths as the user typed them.
	t.Chdir(dir)
	m, err := Load("models/")
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{
		filepath.Join("models", "a.yaml"),
		filepath.Join("models", "site", "b.yml"),
		filepath.Join("models", "types.yaml"),
	}
	if !slices.Equal(m.Files, wantFiles) {
		t.Errorf("Files = %q, want %q", m.Files, wantFiles)
	}
	if len(m.Assets) != 2 || m.Assets[0].Path != "acme/munich/water/line1/pump1" || m.Assets[1].Path != "acme/munich/water/line1/pump2" {
		t.Errorf("assets not loaded and sorted: %v", m.Assets)
	}

	// A file named twice, directly and through its directory, loads once.
	m, err = Load("models", filepath.Join("models", "a.yaml"))
	if err != nil || len(m.Files) != 3 {
		t.Errorf("Load(dir, file in dir) = %v, %v", m, err)
	}

	// Problems from a directory without models and from a file together.
	_, err = Load("empty", "broken.yaml")
	var ds Diagnostics
	if !errors.As(err, &ds) {
		t.Fatalf("error %T %v is not Diagnostics", err, err)
	}
	want := "broken.yaml:2:3: asset path \"x\" has 1 levels, want 5 (enterprise/site/area/line/cell)\n" +
		"broken.yaml:2:13: unknown asset type \"Nope\"\n" +
		"empty: no model files (*.yaml, *.yml) in this directory"
	if err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}

	// I/O problems are errors, not diagnostics.
	_, err = Load("missing.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want a wrapped ErrNotExist", err)
	}
	if _, err := Load(); err == nil {
		t.Error("Load() without paths did not fail")
	}
}

func TestLoadFilesEmpty(t *testing.T) {
	m, err := LoadFiles([]File{{Name: "a.yaml"}, {Name: "b.yaml", Data: []byte("# nothing yet\n")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Assets) != 0 || !slices.Equal(m.Levels, DefaultLevels) || len(m.Files) != 2 {
		t.Errorf("empty model = %+v", m)
	}
}

func TestLoadFilesLevels(t *testing.T) {
	m, err := LoadFiles([]File{
		{Name: "a.yaml", Data: []byte("levels: [plant, unit]\ntypes:\n  T:\n    tags:\n      v: {address: \"hr:1\"}\n")},
		{Name: "b.yaml", Data: []byte("assets:\n  p1/u1: {type: T, source: s}\n")},
		{Name: "c.yaml", Data: []byte("levels: [plant, unit]\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Levels, []string{"plant", "unit"}) || len(m.Assets) != 1 || m.Assets[0].Tags[0].Topic != "p1/u1/v" {
		t.Errorf("model = %+v", m)
	}
}

func TestExprPos(t *testing.T) {
	const text = `types:
  T:
    tags:
      a: {expr: raw + 1}
      b: {expr: "raw + 2"}
      c: {expr: 'raw + 3'}
      d:
        expr: |
          raw + 4
assets:
  a/b/c/d/e: {type: T}
`
	m, err := LoadFiles([]File{{Name: "x.yaml", Data: []byte(text)}})
	if err != nil {
		t.Fatal(err)
	}
	tags := m.Assets[0].Tags
	want := []Pos{{"x.yaml", 4, 17}, {"x.yaml", 5, 18}, {"x.yaml", 6, 18}, {"x.yaml", 9, 11}}
	lines := strings.Split(text, "\n")
	for i, tag := range tags {
		if tag.ExprPos != want[i] {
			t.Errorf("%s: ExprPos %v, want %v", tag.Name, tag.ExprPos, want[i])
		}
		if !strings.HasPrefix(lines[tag.ExprPos.Line-1][tag.ExprPos.Col-1:], strings.TrimSpace(tag.Expr)) {
			t.Errorf("%s: ExprPos %v does not point at %q", tag.Name, tag.ExprPos, tag.Expr)
		}
	}
	if tags[3].Expr != "raw + 4\n" {
		t.Errorf("block expr = %q", tags[3].Expr)
	}
}

var fuzzSeeds = []string{
	"",
	"# comment\n",
	"levels: [a, b]\nbase: x\ntypes:\n  T:\n    params: {p: ~}\n    tags:\n      v: {address: \"hr:1.3\", expr: raw}\nassets:\n  y: {type: T, source: s, params: {p: 1}}\n",
	"types: {T: {tags: {a: {address: 'holding:0', type: string, length: 2}}}}\nassets: {a/b/c/d/e: {type: T, source: s, offset: 65535}}\n",
	"assets:\n  a/b/c/d/e: &x {type: T}\n  a/b/c/d/f: *x\n",
	"a: &a [*a]\n",
	"types:\n  T:\n    tags:\n      t: {expr: [x], enum: {a: b}, deadband: 5%, heartbeat: x}\n",
	"---\n---\n",
	"base: [\n",
	"\xff\xfe",
	"{",
	"? [a]\n: b\n",
	"<<: {levels: [a]}\n",
	"types:\n  T:\n    tags:\n      <<: {a: {expr: '1'}}\n",
}

// FuzzLoad feeds arbitrary bytes to LoadFiles: it must never panic, a result
// is either a model or diagnostics, and every diagnostic of a non-empty
// input names the file and a line.
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("../models/bottling.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadFiles([]File{{Name: "fuzz.yaml", Data: data}})
		if err == nil {
			if m == nil {
				t.Fatal("nil model without error")
			}
			for _, a := range m.Assets {
				for _, tag := range a.Tags {
					if tag.Address != nil && tag.Address.Key != tag.Address.Modbus.Key() {
						t.Fatalf("key mismatch for %s", tag.Topic)
					}
				}
			}
			return
		}
		if m == nil {
			t.Fatal("no partial model returned with the error")
		}
		for _, a := range m.Assets {
			if a == nil {
				t.Fatal("nil asset in the partial model")
			}
		}
		var ds Diagnostics
		if !errors.As(err, &ds) {
			t.Fatalf("error %T is not Diagnostics: %v", err, err)
		}
		if len(ds) == 0 {
			t.Fatal("empty Diagnostics as error")
		}
		for _, d := range ds {
			if d.Pos.File != "fuzz.yaml" {
				t.Fatalf("diagnostic without the file name: %v", d)
			}
			if len(data) > 0 && d.Pos.Line <= 0 {
				t.Fatalf("diagnostic without a line: %v (input %q)", d, data)
			}
			if d.Msg == "" {
				t.Fatalf("diagnostic without a message at %v", d.Pos)
			}
		}
	})
}

// bigModel is a model of n Filler instances spread over lines of 10.
func bigModel(n int) []File {
	types, err := os.ReadFile("../models/bottling.yaml")
	if err != nil {
		panic(err)
	}
	// Keep only the types: the benchmark adds its own instances.
	text := string(types)
	text = text[:strings.Index(text, "\nassets:")]
	var b strings.Builder
	b.WriteString("base: acme/munich/bottling\nassets:\n")
	for i := range n {
		fmt.Fprintf(&b, "  line%d/filler%d:\n    type: Filler\n    source: plc%d\n    unit_id: %d\n    offset: %d\n    params: {scale: 0.5}\n",
			i/10, i%10, i/100, 1+i%10, (i%10)*100)
	}
	return []File{{Name: "types.yaml", Data: []byte(text)}, {Name: "assets.yaml", Data: []byte(b.String())}}
}

func BenchmarkLoad1000Assets(b *testing.B) {
	files := bigModel(1000)
	b.ReportAllocs()
	b.SetBytes(int64(len(files[0].Data) + len(files[1].Data)))
	for b.Loop() {
		m, err := LoadFiles(files)
		if err != nil {
			b.Fatal(err)
		}
		if len(m.Assets) != 1000 {
			b.Fatalf("%d assets", len(m.Assets))
		}
	}
}

func TestDatatypes(t *testing.T) {
	const text = "types:\n  T:\n    tags:\n      v: {address: \"hr:1\", datatype: %s}\nassets:\n  a/b/c/d/e: {type: T, source: s}\n"
	for _, c := range []struct {
		name  string
		kind  Kind
		width uint8
	}{
		{"bool", KindBool, 0},
		{"int8", KindInt, 8},
		{"int16", KindInt, 16},
		{"int32", KindInt, 32},
		{"int64", KindInt, 0},
		{"uint8", KindUint, 8},
		{"uint16", KindUint, 16},
		{"uint32", KindUint, 32},
		{"uint64", KindUint, 0},
		{"float32", KindFloat, 32},
		{"float64", KindFloat, 0},
		{"string", KindString, 0},
	} {
		m, err := LoadFiles([]File{{Name: "x.yaml", Data: []byte(fmt.Sprintf(text, c.name))}})
		if err != nil {
			t.Errorf("datatype %s: %v", c.name, err)
			continue
		}
		tag := m.Assets[0].Tags[0]
		if tag.Datatype != c.kind || tag.Width != c.width || tag.TypeName() != c.name {
			t.Errorf("datatype %s: kind %s width %d name %q, want %s %d %q",
				c.name, tag.Datatype, tag.Width, tag.TypeName(), c.kind, c.width, c.name)
		}
	}

	const all = "; use bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64 or string"
	for _, c := range []struct {
		name, want string
	}{
		// A name without a width is offered the full-width type, so a
		// suggestion never narrows the values.
		{"float", ` (did you mean "float64"?)`},
		{"int", ` (did you mean "int64"?)`},
		{"unsigned", ""},
		{"in16", ` (did you mean "int16"?)`},
		{"Int8", ` (did you mean "int8"?)`},
		{"uint23", ` (did you mean "uint32"?)`},
		{"flaot32", ` (did you mean "float32"?)`},
		{"int128", ` (did you mean "int16"?)`},
		{"double", ""},
		{"array", ""}, // arrays are raw OPC UA values only
	} {
		_, err := LoadFiles([]File{{Name: "x.yaml", Data: []byte(fmt.Sprintf(text, c.name))}})
		want := fmt.Sprintf("x.yaml:4:38: unknown datatype %q%s%s", c.name, c.want, all)
		if err == nil || err.Error() != want {
			t.Errorf("datatype %s:\n got %v\nwant %s", c.name, err, want)
		}
	}
}

func TestTypeName(t *testing.T) {
	for _, c := range []struct {
		kind  Kind
		width uint8
		want  string
	}{
		{KindNull, 0, "null"},
		{KindBool, 0, "bool"},
		{KindInt, 0, "int64"},
		{KindInt, 8, "int8"},
		{KindInt, 16, "int16"},
		{KindInt, 32, "int32"},
		{KindUint, 0, "uint64"},
		{KindUint, 8, "uint8"},
		{KindUint, 16, "uint16"},
		{KindUint, 32, "uint32"},
		{KindFloat, 0, "float64"},
		{KindFloat, 32, "float32"},
		{KindString, 0, "string"},
		{KindArray, 0, "array"},
		// Only a model or meta built in Go can hold these.
		{KindFloat, 16, "float64(width 16)"},
		{KindString, 8, "string(width 8)"},
	} {
		meta := TagMeta{Datatype: c.kind, Width: c.width}
		tag := Tag{Datatype: c.kind, Width: c.width}
		if got := meta.TypeName(); got != c.want {
			t.Errorf("TagMeta{%s, %d}.TypeName() = %q, want %q", c.kind, c.width, got, c.want)
		}
		if got := tag.TypeName(); got != c.want {
			t.Errorf("Tag{%s, %d}.TypeName() = %q, want %q", c.kind, c.width, got, c.want)
		}
	}
}

func TestRawTypeWidth(t *testing.T) {
	want := map[RawType]uint8{
		RawBool: 0, RawInt16: 16, RawUint16: 16, RawInt32: 32, RawUint32: 32, RawFloat32: 32,
		RawInt64: 0, RawUint64: 0, RawFloat64: 0, RawString: 0,
	}
	for rt := RawBool; rt <= RawString; rt++ {
		if got := rt.Width(); got != want[rt] {
			t.Errorf("%s.Width() = %d, want %d", rt, got, want[rt])
		}
	}
}
