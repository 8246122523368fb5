package harmonize

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/harmonize")

const goldenDir = "../testdata/harmonize"

// Each directory in testdata/harmonize is one case: model.yaml plus either
// samples.txt (the model must compile; the points go to points.golden) or
// nothing else (the model must not compile; the diagnostics go to
// diag.golden).
//
// samples.txt has one sample per line:
//
//	SOURCE ADDRESS QUALITY VALUE @RECEIVE_MS [src@SOURCE_MS] [stale]
//
// VALUE is parsed as the bound address's raw type, unless written with a
// kind prefix (int:, uint:, float:, bool:, string:"...") or as null. Each
// line is one Apply call; a line starting with "+" joins the previous
// line's batch. "tick @MS" calls Tick. The engine's clock is the newest
// receive time of the batch (or the tick time).
func TestGolden(t *testing.T) {
	dirs, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		n++
		dir := filepath.Join(goldenDir, d.Name())
		t.Run(d.Name(), func(t *testing.T) { runGolden(t, dir) })
	}
	if n == 0 {
		t.Fatal("no golden cases found")
	}
}

func loadModel(t testing.TB, dir string) (*model.Model, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "model.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return model.LoadFiles([]model.File{{Name: "model.yaml", Data: data}})
}

func runGolden(t *testing.T, dir string) {
	m, err := loadModel(t, dir)
	if err != nil {
		t.Fatalf("model does not load:\n%v", err)
	}
	samples, err := os.ReadFile(filepath.Join(dir, "samples.txt"))
	if os.IsNotExist(err) {
		_, err := Compile(m)
		if err == nil {
			t.Fatal("Compile succeeded; a case without samples.txt expects diagnostics")
		}
		if _, ok := err.(model.Diagnostics); !ok {
			t.Fatalf("error is %T, want model.Diagnostics", err)
		}
		compareGolden(t, filepath.Join(dir, "diag.golden"), []byte(err.Error()+"\n"))
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(m)
	if err != nil {
		t.Fatalf("Compile:\n%v", err)
	}
	got := replay(t, p, samples)
	compareGolden(t, filepath.Join(dir, "points.golden"), got)
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./harmonize -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test ./harmonize -update and review the diff)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// replay feeds samples.txt to a fresh engine and renders what it publishes.
func replay(t *testing.T, p *Plan, script []byte) []byte {
	var clock time.Time
	e := NewEngine(p, Options{Now: func() time.Time { return clock }})
	kinds := make(map[bindKey]model.Kind)
	for _, b := range p.Bindings() {
		if b.Address.Modbus != nil {
			kinds[bindKey{b.Source, b.Key}] = b.Address.Modbus.Type.ValueKind()
		}
	}

	var out bytes.Buffer
	for _, b := range p.Bindings() {
		fmt.Fprintf(&out, "binding %s %s poll=%v\n", b.Source, b.Key, b.Poll)
	}
	var batch []model.Sample
	var lines []string
	flush := func() {
		if len(lines) == 0 {
			return
		}
		for _, l := range lines {
			fmt.Fprintf(&out, "> %s\n", l)
		}
		for _, s := range batch {
			if s.ReceiveTime.After(clock) {
				clock = s.ReceiveTime
			}
		}
		writePoints(&out, e.Apply(batch, nil))
		batch, lines = nil, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(script))
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "tick "); ok {
			flush()
			ms, err := parseMillis(rest)
			if err != nil {
				t.Fatalf("samples.txt:%d: %v", ln, err)
			}
			clock = time.UnixMilli(ms).UTC()
			fmt.Fprintf(&out, "> %s\n", line)
			writePoints(&out, e.Tick(clock, nil))
			continue
		}
		join := strings.HasPrefix(line, "+")
		if !join {
			flush()
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "+"))
		s, err := parseSample(line, kinds)
		if err != nil {
			t.Fatalf("samples.txt:%d: %v", ln, err)
		}
		batch = append(batch, s)
		lines = append(lines, line)
	}
	flush()
	st := e.Stats()
	fmt.Fprintf(&out, "stats: samples=%d points=%d suppressed=%d expr_errors=%d unknown=%d\n",
		st.Samples, st.Points, st.Suppressed, st.ExprErrors, st.UnknownSamples)
	return out.Bytes()
}

func writePoints(w *bytes.Buffer, pts []model.Point) {
	for _, pt := range pts {
		fmt.Fprintf(w, "  %s = %s %s %s", pt.Meta.Topic, fmtValue(pt.Value), pt.Value.Kind(), pt.Quality)
		if pt.Stale {
			w.WriteString(" stale")
		}
		fmt.Fprintf(w, " @%d", pt.Time.UnixMilli())
		if !pt.Raw.IsNull() {
			fmt.Fprintf(w, " raw=%s", fmtValue(pt.Raw))
		}
		w.WriteByte('\n')
	}
}

func fmtValue(v model.Value) string {
	if v.Kind() == model.KindString {
		return strconv.Quote(v.Str())
	}
	return v.String()
}

func parseMillis(s string) (int64, error) {
	s, ok := strings.CutPrefix(strings.TrimSpace(s), "@")
	if !ok {
		return 0, fmt.Errorf("time %q must look like @1000", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

func parseSample(line string, kinds map[bindKey]model.Kind) (model.Sample, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return model.Sample{}, fmt.Errorf("want SOURCE ADDRESS QUALITY VALUE @MS, got %q", line)
	}
	s := model.Sample{Source: f[0], Address: f[1]}
	switch f[2] {
	case "GOOD":
		s.Quality = model.QualityGood
	case "UNCERTAIN":
		s.Quality = model.QualityUncertain
	case "BAD":
		s.Quality = model.QualityBad
	default:
		return s, fmt.Errorf("unknown quality %q", f[2])
	}
	v, err := parseValue(f[3], kinds[bindKey{f[0], f[1]}])
	if err != nil {
		return s, err
	}
	s.Value = v
	ms, err := parseMillis(f[4])
	if err != nil {
		return s, err
	}
	s.ReceiveTime = time.UnixMilli(ms).UTC()
	for _, opt := range f[5:] {
		switch {
		case opt == "stale":
			s.Stale = true
		case strings.HasPrefix(opt, "src@"):
			ms, err := strconv.ParseInt(opt[4:], 10, 64)
			if err != nil {
				return s, err
			}
			s.SourceTime = time.UnixMilli(ms).UTC()
		default:
			return s, fmt.Errorf("unknown option %q", opt)
		}
	}
	return s, nil
}

func parseValue(text string, kind model.Kind) (model.Value, error) {
	if text == "null" {
		return model.Null(), nil
	}
	for _, k := range []model.Kind{model.KindBool, model.KindInt, model.KindUint, model.KindFloat, model.KindString} {
		prefix := map[model.Kind]string{model.KindBool: "bool:", model.KindInt: "int:", model.KindUint: "uint:",
			model.KindFloat: "float:", model.KindString: "string:"}[k]
		if rest, ok := strings.CutPrefix(text, prefix); ok {
			text, kind = rest, k
			break
		}
	}
	switch kind {
	case model.KindBool:
		b, err := strconv.ParseBool(text)
		return model.BoolValue(b), err
	case model.KindInt:
		i, err := strconv.ParseInt(text, 0, 64)
		return model.IntValue(i), err
	case model.KindUint:
		u, err := strconv.ParseUint(text, 0, 64)
		return model.UintValue(u), err
	case model.KindFloat:
		f, err := strconv.ParseFloat(text, 64)
		return model.FloatValue(f), err
	case model.KindString:
		s, err := strconv.Unquote(text)
		return model.StringValue(s), err
	}
	return model.Null(), fmt.Errorf("value %q: unknown address and no kind prefix", text)
}
