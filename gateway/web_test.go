package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"

	"github.com/unsgate/unsgate/model"
)

// webGateway builds a gateway for pumpModel (not running: its sources
// and sinks never start) with the given http section, and starts a web
// server for it on a free loopback port with a fast event interval.
func webGateway(t *testing.T, httpSection string) (*Gateway, *webServer, string) {
	t.Helper()
	text := "id: gw-web\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:1\"}\n  plc2: {url: \"tcp://127.0.0.1:1\"}\n" + httpSection
	cfg, g := buildGateway(t, text, pumpModel, map[string]string{"UNSGATE_TOKEN": "s3cret-token"})
	t.Cleanup(func() { _ = g.fanout.Close() })
	w := newWebServer(g, &cfg.HTTP, 20*time.Millisecond)
	if err := w.start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.stop)
	return g, w, "http://" + w.ln.Addr().String()
}

// feed runs samples for pump1 and pump2 through the gateway's engine, as
// a source would: flow (raw/10), pressure, running.
func feed(t *testing.T, g *Gateway, flow1, flow2 uint16) {
	t.Helper()
	now := time.Now()
	var batch []model.Sample
	for _, b := range g.plan.Bindings() {
		var v model.Value
		switch b.Address.Modbus.Area {
		case model.AreaHoldingRegister:
			v = model.UintValue(uint64(flow1))
			if b.Source == "plc2" {
				v = model.UintValue(uint64(flow2))
			}
		case model.AreaInputRegister:
			v = model.IntValue(-5)
		default:
			v = model.BoolValue(true)
		}
		batch = append(batch, model.Sample{Source: b.Source, Address: b.Key, Value: v, Quality: model.QualityGood, ReceiveTime: now})
	}
	g.emit(batch)
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url, header...)
}

func do(t *testing.T, method, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, body := get(t, url)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

const p1 = "acme/plant/water/line1/pump1/"

// tagJSON and tagsJSON read tagReport and tagsEvent back, values as
// they are on the wire.
type tagJSON struct {
	Path        string          `json:"path"`
	Value       json.RawMessage `json:"value"`
	Raw         json.RawMessage `json:"raw"`
	Unit        string          `json:"unit"`
	Source      string          `json:"source"`
	Quality     string          `json:"quality"`
	TimestampMS int64           `json:"timestamp_ms"`
	AgeMS       int64           `json:"age_ms"`
}

type tagsJSON struct {
	Full      bool      `json:"full"`
	Selected  int       `json:"selected"`
	Truncated bool      `json:"truncated"`
	Tags      []tagJSON `json:"tags"`
}

func TestWebHealthReadyAndStatus(t *testing.T) {
	g, _, base := webGateway(t, "")
	if resp, body := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %s %q", resp.Status, body)
	}
	// Not running: no sink yet.
	if resp, body := get(t, base+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no sink running yet") {
		t.Errorf("/readyz: %s %q", resp.Status, body)
	}

	feed(t, g, 123, 456)
	var st statusReport
	getJSON(t, base+"/api/v1/status", &st)
	if st.Gateway.ID != "gw-web" || st.Gateway.NowMS == 0 || st.Gateway.StartedMS == 0 {
		t.Errorf("gateway %+v", st.Gateway)
	}
	if st.Ready.OK || !strings.Contains(st.Ready.Reason, "no sink") {
		t.Errorf("ready %+v", st.Ready)
	}
	if len(st.Sources) != 2 || st.Sources[0].Name != "plc1" || st.Sources[0].State != "stopped" ||
		st.Sources[0].URL != "tcp://127.0.0.1:1" {
		t.Errorf("sources %+v", st.Sources)
	}
	// pump1 has flow, pressure, running and the derived per_hour: three
	// tags of plc1, all GOOD now.
	if want := (tagCounts{Total: 3, Good: 3}); st.Sources[0].Tags != want {
		t.Errorf("plc1 tags %+v, want %+v", st.Sources[0].Tags, want)
	}
	if want := (tagCounts{Total: 8, Good: 8}); st.Tags != want {
		t.Errorf("tags %+v, want %+v", st.Tags, want)
	}
	if st.Model.Tags != 8 || st.Model.LoadedAt.IsZero() || len(st.Model.Files) != 1 {
		t.Errorf("model %+v", st.Model)
	}
	if st.Engine.Samples != 6 || st.Engine.Points != 8 {
		t.Errorf("engine %+v", st.Engine)
	}
}

func TestWebTagsAPI(t *testing.T) {
	g, _, base := webGateway(t, "")
	var all tagsJSON
	getJSON(t, base+"/api/v1/tags", &all)
	if all.Selected != 8 || len(all.Tags) != 8 || all.Tags[0].Quality != "" || all.Tags[0].TimestampMS != 0 {
		t.Fatalf("before any value: %+v", all)
	}
	feed(t, g, 123, 456)
	feed(t, g, 124, 456)

	var some tagsJSON
	getJSON(t, base+"/api/v1/tags?filter=PUMP1", &some)
	if some.Selected != 4 || len(some.Tags) != 4 || some.Truncated {
		t.Fatalf("filter pump1: %+v", some)
	}
	var flow tagJSON
	for _, r := range some.Tags {
		if r.Path == p1+"flow" {
			flow = r
		}
	}
	if flow.Quality != "GOOD" || flow.Unit != "m3/h" || flow.Source != "plc1" || flow.TimestampMS == 0 || flow.AgeMS < 0 {
		t.Errorf("flow row %+v", flow)
	}
	if string(flow.Value) != "12.4" || string(flow.Raw) != "124" {
		t.Errorf("flow value %s raw %s, want 12.4 and 124", flow.Value, flow.Raw)
	}

	var limited tagsJSON
	getJSON(t, base+"/api/v1/tags?filter=pump&limit=3", &limited)
	if limited.Selected != 8 || len(limited.Tags) != 3 || !limited.Truncated {
		t.Errorf("limit 3: selected %d, %d rows, truncated %v", limited.Selected, len(limited.Tags), limited.Truncated)
	}
	if resp, body := get(t, base+"/api/v1/tags?limit=many"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "limit") {
		t.Errorf("bad limit: %s %s", resp.Status, body)
	}

	var one map[string]any
	getJSON(t, base+"/api/v1/tags/"+p1+"per_hour", &one)
	if one["path"] != p1+"per_hour" || one["value"] != 24.8 || one["raw"] != nil || one["quality"] != "GOOD" {
		t.Errorf("one tag: %v", one)
	}
	var h historyResponse
	getJSON(t, base+"/api/v1/tags/"+p1+"flow/history", &h)
	if h.Path != p1+"flow" || h.Unit != "m3/h" || len(h.Values) != 2 || h.Values[0].Value != 12.3 || h.Values[1].Value != 12.4 {
		t.Errorf("history %+v", h)
	}
	for _, path := range []string{"/api/v1/tags/acme/nope", "/api/v1/tags/acme/nope/history", "/api/v1/tags/" + p1 + "history"} {
		resp, body := get(t, base+path)
		var e apiError
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "no tag") {
			t.Errorf("GET %s: %s %s", path, resp.Status, body)
		}
	}
}

// The page is read-only, served from the binary, with nothing from
// elsewhere.
func TestWebReadOnlyAndPage(t *testing.T) {
	_, _, base := webGateway(t, "")
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		for _, path := range []string{"/", "/api/v1/status", "/metrics", "/healthz", "/api/v1/tags/x"} {
			resp, _ := do(t, method, base+path)
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %s, Allow %q", method, path, resp.Status, resp.Header.Get("Allow"))
			}
		}
	}
	resp, body := do(t, http.MethodHead, base+"/")
	if resp.StatusCode != http.StatusOK || body != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("HEAD /: %s %q", resp.Status, body)
	}

	for path, ctype := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/style.css": "text/css"} {
		resp, body := get(t, base+path)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) < 500 {
			t.Errorf("GET %s: %s %s, %d bytes", path, resp.Status, resp.Header.Get("Content-Type"), len(body))
		}
		if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: security headers missing: %v", path, resp.Header)
		}
		// Offline: no CDN, no font service, no absolute URL at all.
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s refers to %q: the page must work without a network", path, bad)
			}
		}
		etag := resp.Header.Get("ETag")
		if resp, _ := get(t, base+path, "If-None-Match", etag); etag == "" || resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag %q: %s", path, etag, resp.Status)
		}
	}
	// What the browser test relies on.
	_, page := get(t, base+"/")
	for _, id := range []string{`id="tags"`, `id="sources"`, `id="sinks"`, `id="model-version"`, `id="filter"`, `id="tree"`,
		`id="sparkline"`, `name="viewport"`} {
		if !strings.Contains(page, id) {
			t.Errorf("page lacks %s", id)
		}
	}
	if resp, _ := get(t, base+"/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %s", resp.Status)
	}
}

// scrape reads /metrics and parses the exposition.
func scrape(t *testing.T, base string, header ...string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := get(t, base+"/metrics", header...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s\n%s", resp.Status, body)
	}
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// metric returns the value of the series of family name whose labels
// include the given pairs; ok is false when there is none.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestWebMetrics(t *testing.T) {
	g, _, base := webGateway(t, "")
	g.SetModelVersion("0123456789ab")
	before := scrape(t, base)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "unsgate_source_up",
		"unsgate_source_request_duration_seconds", "unsgate_engine_samples_total", "unsgate_model_info", "unsgate_tags",
		"unsgate_ready", "unsgate_http_event_streams"} {
		if before[name] == nil {
			t.Errorf("no metric family %s", name)
		}
	}
	if f := before["unsgate_source_request_duration_seconds"]; f != nil && f.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("request duration is a %v", f.GetType())
	}
	if v, ok := metric(before, "unsgate_source_state", "source", "plc1", "state", "stopped"); !ok || v != 1 {
		t.Errorf("plc1 stopped = %v (%v)", v, ok)
	}
	if v, ok := metric(before, "unsgate_model_info", "version", g.ModelVersion()); !ok || v != 1 || g.ModelVersion() == "" {
		t.Errorf("model info for version %q: %v (%v)", g.ModelVersion(), v, ok)
	}
	if v, _ := metric(before, "unsgate_tags", "state", "waiting"); v != 8 {
		t.Errorf("waiting tags %v, want 8", v)
	}

	feed(t, g, 1, 2)
	after := scrape(t, base)
	if v, _ := metric(after, "unsgate_engine_samples_total"); v != 6 {
		t.Errorf("samples %v, want 6", v)
	}
	if v, _ := metric(after, "unsgate_engine_points_total"); v != 8 {
		t.Errorf("points %v, want 8", v)
	}
	if v, _ := metric(after, "unsgate_tags", "state", "good"); v != 8 {
		t.Errorf("good tags %v, want 8", v)
	}
	if v, _ := metric(after, "unsgate_source_tags", "source", "plc2", "state", "good"); v != 3 {
		t.Errorf("plc2 good tags %v, want 3", v)
	}
}

func TestHTTPConfig(t *testing.T) {
	envs := env(map[string]string{"TOKEN": "s3cret-token", "EMPTY": ""})
	parse := func(section string) (*Config, error) {
		return ParseConfig("gw.yaml", []byte("id: a\nmodels: [m]\n"+section), envs)
	}
	cfg, err := parse("")
	if err != nil || cfg.HTTP.Listen.V != DefaultHTTPListen || cfg.HTTP.Disabled {
		t.Fatalf("default: %+v, %v", cfg.HTTP, err)
	}
	for _, ok := range []string{
		"http: {listen: \"127.0.0.1:9000\"}",
		"http: {listen: \"localhost:9000\"}",
		"http: {listen: \"[::1]:9000\"}",
		"http: {listen: \"127.0.0.2:0\"}",
		"http: {listen: \"0.0.0.0:8080\", token: \"${TOKEN}\"}",
		"http: {listen: \":8080\", username: op, password: \"${TOKEN}\"}",
		"http: {listen: \"0.0.0.0:8080\", disabled: true}",
		"http:",
	} {
		if _, err := parse(ok + "\n"); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, c := range []struct{ section, want string }{
		{"http:\n  listen: 0.0.0.0:8080\n", "gw.yaml:4:11: http.listen 0.0.0.0:8080: binding beyond loopback needs http.token or http.username/password"},
		{"http:\n  listen: \"[::]:8080\"\n", "gw.yaml:4:11: http.listen [::]:8080: binding beyond loopback"},
		{"http:\n  listen: \":8080\"\n", "gw.yaml:4:11: http.listen :8080: binding beyond loopback"},
		{"http:\n  listen: gateway.plant.local:8080\n", "gw.yaml:4:11: http.listen gateway.plant.local:8080: binding beyond loopback"},
		{"http:\n  listen: 10.0.0.5:8080\n  token: ${EMPTY}\n", "gw.yaml:4:11: http.listen 10.0.0.5:8080: binding beyond loopback"},
		{"http:\n  listen: 10.0.0.5:8080\n  username: op\n", "gw.yaml:5:13: http.username: basic auth needs http.password too"},
		{"http:\n  password: x\n", "gw.yaml:4:13: http.password: basic auth needs http.username too"},
		{"http:\n  listen: 8080\n", "gw.yaml:4:11: http.listen 8080: want host:port"},
		{"http:\n  listen: \"127.0.0.1:http\"\n", "gw.yaml:4:11: http.listen 127.0.0.1:http: port \"http\": want a number"},
		{"http:\n  listen: \"\"\n", "gw.yaml:4:11: http.listen : want host:port, e.g. 127.0.0.1:8080 (http: {disabled: true} turns the web server off)"},
		{"http:\n  lisen: 127.0.0.1:80\n", `unknown key "lisen"`},
	} {
		_, err := parse(c.section)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.section, err, c.want)
		}
	}

	// The --http-listen flag: the same rule.
	cfg, _ = parse("")
	if err := cfg.SetHTTPListen("0.0.0.0:8080"); err == nil ||
		err.Error() != "--http-listen 0.0.0.0:8080: binding beyond loopback needs http.token or http.username/password" {
		t.Errorf("flag beyond loopback: %v", err)
	}
	if err := cfg.SetHTTPListen("127.0.0.1:8081"); err != nil || cfg.HTTP.Listen.V != "127.0.0.1:8081" {
		t.Errorf("flag on loopback: %v, listen %q", err, cfg.HTTP.Listen.V)
	}
	cfg, _ = parse("http: {token: \"${TOKEN}\", disabled: true}\n")
	if err := cfg.SetHTTPListen("0.0.0.0:0"); err != nil || cfg.HTTP.Disabled {
		t.Errorf("flag with a token: %v, disabled %v", err, cfg.HTTP.Disabled)
	}
}

func TestWebAuth(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		_, _, base := webGateway(t, "http: {listen: \"0.0.0.0:0\", token: \"${UNSGATE_TOKEN}\"}\n")
		for _, path := range []string{"/", "/app.js", "/api/v1/status", "/api/v1/tags", "/api/v1/events", "/metrics", "/readyz"} {
			resp, body := get(t, base+path)
			auth := resp.Header.Values("WWW-Authenticate")
			if resp.StatusCode != http.StatusUnauthorized || len(auth) != 2 || !strings.HasPrefix(auth[0], "Basic ") ||
				!strings.HasPrefix(auth[1], "Bearer ") || strings.Contains(body, "gw-web") {
				t.Errorf("GET %s without the token: %s %v %q", path, resp.Status, auth, body)
			}
		}
		for _, h := range [][]string{
			{"Authorization", "Bearer wrong"},
			{"Authorization", "Bearer s3cret-token-and-more"},
			{"Authorization", "Bearer"},
			{"Authorization", "Basic " + basic("op", "wrong")},
			{"Authorization", "s3cret-token"},
		} {
			if resp, _ := get(t, base+"/api/v1/status", h...); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%v: %s", h, resp.Status)
			}
		}
		for _, h := range [][]string{
			{"Authorization", "Bearer s3cret-token"},
			{"Authorization", "bearer s3cret-token"},
			{"Authorization", "Basic " + basic("anyone", "s3cret-token")}, // the browser's prompt
		} {
			if resp, body := get(t, base+"/api/v1/status", h...); resp.StatusCode != http.StatusOK || !strings.Contains(body, "gw-web") {
				t.Errorf("%v: %s", h, resp.Status)
			}
		}
		if fams := scrape(t, base, "Authorization", "Bearer s3cret-token"); fams["unsgate_source_up"] == nil {
			t.Error("/metrics with the token has no unsgate_source_up")
		}
		// /healthz is for supervisors: no login.
		if resp, _ := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz without the token: %s", resp.Status)
		}
		// Read-only also with the token; without it, nothing is said.
		if resp, _ := do(t, http.MethodPost, base+"/api/v1/status", "Authorization", "Bearer s3cret-token"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST with the token: %s", resp.Status)
		}
		if resp, _ := do(t, http.MethodPost, base+"/api/v1/status"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST without the token: %s", resp.Status)
		}
	})
	t.Run("basic", func(t *testing.T) {
		_, _, base := webGateway(t, "http: {listen: \"127.0.0.1:0\", username: operator, password: \"${UNSGATE_TOKEN}\"}\n")
		if resp, _ := get(t, base+"/api/v1/status"); resp.StatusCode != http.StatusUnauthorized || len(resp.Header.Values("WWW-Authenticate")) != 1 {
			t.Errorf("without credentials, even on loopback: %s %v", resp.Status, resp.Header.Values("WWW-Authenticate"))
		}
		for _, c := range []struct {
			user, pass string
			code       int
		}{{"operator", "s3cret-token", 200}, {"operator", "wrong", 401}, {"admin", "s3cret-token", 401}, {"", "", 401}} {
			if resp, _ := get(t, base+"/api/v1/status", "Authorization", "Basic "+basic(c.user, c.pass)); resp.StatusCode != c.code {
				t.Errorf("basic %s:%s: %s, want %d", c.user, c.pass, resp.Status, c.code)
			}
		}
		if resp, _ := get(t, base+"/api/v1/status", "Authorization", "Bearer s3cret-token"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("bearer without a token configured: %s", resp.Status)
		}
	})
}

func basic(user, pass string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// sse reads server-sent events from a response body.
type sse struct {
	r      *bufio.Reader
	cancel context.CancelFunc
}

type event struct {
	name string
	data string
}

func openEvents(t *testing.T, url string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return &sse{r: bufio.NewReader(resp.Body), cancel: cancel}
}

func (s *sse) next(t *testing.T) event {
	t.Helper()
	var e event
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.name != "" || e.data != "" {
				return e
			}
		case strings.HasPrefix(line, "event: "):
			e.name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			e.data += line[len("data: "):]
		}
	}
}

// nextTags returns the next tags event, failing after within.
func (s *sse) nextTags(t *testing.T, within time.Duration) tagsJSON {
	t.Helper()
	timer := time.AfterFunc(within, s.cancel)
	defer timer.Stop()
	for {
		e := s.next(t)
		if e.name != "tags" {
			continue
		}
		var te tagsJSON
		if err := json.Unmarshal([]byte(e.data), &te); err != nil {
			t.Fatalf("tags event %s: %v", e.data, err)
		}
		return te
	}
}

func paths(te tagsJSON) []string {
	var out []string
	for _, r := range te.Tags {
		out = append(out, r.Path)
	}
	return out
}

func TestWebEvents(t *testing.T) {
	g, w, base := webGateway(t, "")
	feed(t, g, 100, 200)
	s := openEvents(t, base+"/api/v1/events?filter=pump1/")

	// At once: the status, then the whole (filtered) table.
	e := s.next(t)
	var st statusReport
	if e.name != "status" || json.Unmarshal([]byte(e.data), &st) != nil || st.Gateway.ID != "gw-web" || st.Events.Streams != 1 {
		t.Fatalf("first event %s %.200s", e.name, e.data)
	}
	full := s.nextTags(t, 5*time.Second)
	if !full.Full || full.Selected != 4 || len(full.Tags) != 4 {
		t.Fatalf("first tags event: full %v, %v", full.Full, paths(full))
	}

	// A change of pump1 arrives as a delta; pump2's is filtered out.
	feed(t, g, 101, 201)
	delta := s.nextTags(t, 5*time.Second)
	if delta.Full || !strings.Contains(strings.Join(paths(delta), " "), p1+"flow") || strings.Contains(strings.Join(paths(delta), " "), "pump2") {
		t.Fatalf("delta: full %v, %v", delta.Full, paths(delta))
	}
	for _, r := range delta.Tags {
		if r.Path == p1+"flow" && string(r.Value) != "10.1" {
			t.Errorf("flow in the delta: %s", r.Value)
		}
	}

	// A stream that fell behind (its frame dropped) gets the full table
	// again.
	w.hub.mu.Lock()
	for c := range w.hub.clients {
		c.resync.Store(true)
	}
	w.hub.mu.Unlock()
	if again := s.nextTags(t, 5*time.Second); !again.Full || len(again.Tags) != 4 {
		t.Errorf("after a drop: full %v, %v", again.Full, paths(again))
	}

	// A reload (new generation) sends the full table too.
	g.live.SetTags(g.plan.Tags())
	if again := s.nextTags(t, 5*time.Second); !again.Full || len(again.Tags) != 4 {
		t.Errorf("after SetTags: full %v, %v", again.Full, paths(again))
	}

	// With a limit, the table stops there; when more rows change than a
	// delta may carry, the table comes again, not a cut delta.
	small := openEvents(t, base+"/api/v1/events?filter=pump1/&limit=1")
	if first := small.nextTags(t, 5*time.Second); !first.Full || first.Selected != 4 || !first.Truncated || len(first.Tags) != 1 {
		t.Fatalf("limit 1: %+v", first)
	}
	feed(t, g, 102, 202)
	if next := small.nextTags(t, 5*time.Second); !next.Full || next.Selected != 4 || len(next.Tags) != 1 || next.Tags[0].Path != p1+"flow" {
		t.Errorf("after 4 changes with limit 1: full %v, selected %d, %v", next.Full, next.Selected, paths(next))
	}
}

// A stream that does not take its frames never holds up the others or
// the hub: its frames are dropped and counted, and it is marked to get the
// full table again.
func TestEventHubDropsForSlowStream(t *testing.T) {
	h := newEventHub(time.Millisecond)
	slow, _ := h.join()
	fast, _ := h.join()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	encoded := 0
	go func() {
		h.run(ctx, func() []byte { encoded++; return []byte("{}") })
		close(done)
	}()
	got := 0
	for got < 20 {
		select {
		case <-fast.frames:
			got++
		case <-time.After(5 * time.Second):
			t.Fatalf("the fast stream got %d frames", got)
		}
	}
	cancel()
	<-done
	if len(slow.frames) != streamBuffer || !slow.resync.Load() || h.dropped.Load() < uint64(got-streamBuffer-1) {
		t.Errorf("slow stream: %d frames waiting, resync %v, %d dropped of %d encoded", len(slow.frames), slow.resync.Load(), h.dropped.Load(), encoded)
	}

	// Streams are bounded too.
	h2 := newEventHub(time.Second)
	for range maxStreams {
		if _, ok := h2.join(); !ok {
			t.Fatal("a stream below the limit refused")
		}
	}
	if _, ok := h2.join(); ok {
		t.Error("a stream beyond the limit accepted")
	}
}

func TestWebStopEndsStreams(t *testing.T) {
	_, w, base := webGateway(t, "")
	s := openEvents(t, base+"/api/v1/events")
	s.next(t)
	stopped := make(chan struct{})
	go func() { w.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopTimeout + 3*time.Second):
		t.Fatal("stop did not return with an event stream open")
	}
	for {
		if _, err := s.r.ReadString('\n'); err != nil {
			if errors.Is(err, context.Canceled) {
				t.Fatal("the stream was not ended by the server")
			}
			return
		}
	}
}
