package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The web server: the status page (one HTML file, a script and a style
// sheet, embedded: the box is often offline), its JSON API, /metrics and
// the health endpoints. It only reads: every endpoint is GET or HEAD.

//go:embed web/index.html web/app.js web/style.css
var webFiles embed.FS

const (
	// eventEvery is how often the page gets a status event.
	eventEvery = time.Second
	// writeTimeout bounds every response but the event stream (which
	// has its own per event).
	writeTimeout = 30 * time.Second
	// stopTimeout bounds waiting for requests in progress at shutdown.
	stopTimeout = 2 * time.Second
)

type webServer struct {
	g        *Gateway
	id       string // the gateway's id
	logger   *slog.Logger
	auth     *authenticator // nil: no login
	hub      *eventHub
	registry *prometheus.Registry
	started  time.Time
	handler  http.Handler
	assets   map[string]asset

	ln   net.Listener
	stop func()
}

type asset struct {
	data        []byte
	contentType string
	etag        string
}

func newWebServer(g *Gateway, hc *HTTPConfig, every time.Duration) *webServer {
	w := &webServer{
		g: g, id: g.cfg.ID, logger: g.logger.With("component", "http"), auth: newAuthenticator(hc),
		hub: newEventHub(every), started: time.Now(), assets: map[string]asset{},
	}
	for path, file := range map[string]string{"/": "web/index.html", "/app.js": "web/app.js", "/style.css": "web/style.css"} {
		data, err := webFiles.ReadFile(file)
		if err != nil {
			panic(err) // embedded at build time
		}
		sum := sha256.Sum256(data)
		ct := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
			".css": "text/css; charset=utf-8"}[file[strings.LastIndexByte(file, '.'):]]
		w.assets[path] = asset{data: data, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	w.registry = newRegistry(w)
	mux := http.NewServeMux()
	for path := range w.assets {
		if path == "/" {
			path = "/{$}"
		}
		mux.HandleFunc(path, w.asset)
	}
	mux.HandleFunc("/api/v1/status", w.status)
	mux.HandleFunc("/api/v1/tags", w.tags)
	mux.HandleFunc("/api/v1/tags/", w.tag)
	mux.HandleFunc("/api/v1/events", w.events)
	mux.Handle("/metrics", promhttp.HandlerFor(w.registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(w.logger.Handler(), slog.LevelWarn), Registry: w.registry}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { writeText(rw, http.StatusOK, "ok\n") })
	mux.HandleFunc("/readyz", w.ready)
	w.handler = w.guard(mux)
	return w
}

// startHTTP starts the web server on http.listen unless it is disabled.
// stop shuts it down: it ends the event streams and waits a little for
// requests in progress.
func (g *Gateway) startHTTP() (stop func(), err error) {
	hc := &g.cfg.HTTP
	if hc.Disabled {
		return func() {}, nil
	}
	w := newWebServer(g, hc, eventEvery)
	if err := w.start(hc.Listen.V); err != nil {
		return nil, err
	}
	g.web = w
	g.logger.Info("status page", "url", w.URL())
	return w.stop, nil
}

// HTTPAddr is the web server's bound address once Run has started it, or
// "" when it is disabled.
func (g *Gateway) HTTPAddr() string {
	if g.web == nil || g.web.ln == nil {
		return ""
	}
	return g.web.ln.Addr().String()
}

// StatusURL is the status page's address once Run has started the web
// server (a wildcard listen address as loopback), or "".
func (g *Gateway) StatusURL() string {
	if g.web == nil || g.web.ln == nil {
		return ""
	}
	return g.web.URL()
}

// URL is where a browser on the same box finds the page.
func (w *webServer) URL() string { return "http://" + dialAddr(w.ln.Addr().String()) + "/" }

func (w *webServer) start(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("status page on %s: %w (is another gateway running? set http.listen or --http-listen)", listen, err)
	}
	w.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Handlers see the end of this context when the server stops:
		// event streams never go idle by themselves.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(w.logger.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.logger.Error("status page stopped", "err", err)
		}
	})
	wg.Go(func() { w.hub.run(ctx, w.statusJSON) })
	w.stop = func() {
		cancel()
		sctx, done := context.WithTimeout(context.Background(), stopTimeout)
		defer done()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		wg.Wait()
	}
	return nil
}

// guard applies what every endpoint shares: security headers, the login
// (not for /healthz, which a supervisor must reach without one), and the
// read-only rule.
func (w *webServer) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		if r.URL.Path != "/healthz" && !w.auth.ok(r) {
			w.auth.challenge(h)
			writeText(rw, http.StatusUnauthorized, "unauthorized: this gateway's status page needs its http.token (Authorization: Bearer) or http.username/password\n")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			writeText(rw, http.StatusMethodNotAllowed, "method not allowed: the status page is read-only (GET, HEAD)\n")
			return
		}
		if r.URL.Path != "/api/v1/events" {
			_ = http.NewResponseController(rw).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		next.ServeHTTP(rw, r)
	})
}

func (w *webServer) asset(rw http.ResponseWriter, r *http.Request) {
	a := w.assets[r.URL.Path]
	rw.Header().Set("Content-Type", a.contentType)
	rw.Header().Set("Cache-Control", "no-cache") // revalidate: a new binary may serve a new page
	rw.Header().Set("ETag", a.etag)
	http.ServeContent(rw, r, "", time.Time{}, bytes.NewReader(a.data))
}

func (w *webServer) statusJSON() []byte {
	data, err := json.Marshal(w.report())
	if err != nil {
		panic(err) // plain structs of numbers and strings
	}
	return data
}

func (w *webServer) status(rw http.ResponseWriter, _ *http.Request) {
	writeJSONBytes(rw, http.StatusOK, w.statusJSON())
}

func (w *webServer) ready(rw http.ResponseWriter, _ *http.Request) {
	if ok, reason := w.g.Ready(); !ok {
		writeText(rw, http.StatusServiceUnavailable, "not ready: "+reason+"\n")
		return
	}
	writeText(rw, http.StatusOK, "ready\n")
}

// tagsResponse is /api/v1/tags: the rows the filter selects, up to limit.
type tagsResponse struct {
	Selected  int         `json:"selected"`
	Truncated bool        `json:"truncated,omitempty"`
	Tags      []tagReport `json:"tags"`
}

// tags serves /api/v1/tags?filter=F&limit=N: the tag table, every tag of
// the model whose UNS path contains F (any case), in path order.
func (w *webServer) tags(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := tagLimit(q.Get("limit"))
	if err != nil {
		writeJSON(rw, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	rows, _, _, selected := w.g.live.rowsSince(nil, 0, tagFilter(q.Get("filter")), limit)
	now := time.Now()
	resp := tagsResponse{Selected: selected, Truncated: selected > len(rows), Tags: make([]tagReport, len(rows))}
	for i := range rows {
		resp.Tags[i] = rows[i].report(now)
	}
	writeJSON(rw, http.StatusOK, resp)
}

// historyResponse is /api/v1/tags/{path}/history.
type historyResponse struct {
	Path   string         `json:"path"`
	Unit   string         `json:"unit,omitempty"`
	Values []historyValue `json:"values"`
}

type historyValue struct {
	TimestampMS int64   `json:"timestamp_ms"`
	Value       float64 `json:"value"`
}

type apiError struct {
	Error string `json:"error"`
}

// tag serves /api/v1/tags/{path} (one row) and /api/v1/tags/{path}/history
// (its recent numeric values, oldest first, for the sparkline).
func (w *webServer) tag(rw http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/api/v1/tags/")
	if row, ok := w.g.live.row(path); ok {
		writeJSON(rw, http.StatusOK, row.report(time.Now()))
		return
	}
	if base, ok := strings.CutSuffix(path, "/history"); ok {
		if meta, points, ok := w.g.live.history(base); ok {
			resp := historyResponse{Path: meta.Topic, Unit: meta.Unit, Values: make([]historyValue, len(points))}
			for i, p := range points {
				resp.Values[i] = historyValue{TimestampMS: p.t.UnixMilli(), Value: p.v}
			}
			writeJSON(rw, http.StatusOK, resp)
			return
		}
		path = base
	}
	writeJSON(rw, http.StatusNotFound, apiError{fmt.Sprintf("no tag %q in the running model", path)})
}

func writeText(rw http.ResponseWriter, code int, text string) {
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	_, _ = rw.Write([]byte(text))
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeText(rw, http.StatusInternalServerError, err.Error()+"\n")
		return
	}
	writeJSONBytes(rw, code, data)
}

func writeJSONBytes(rw http.ResponseWriter, code int, data []byte) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	_, _ = rw.Write(append(data, '\n'))
}

// authenticator checks the configured credentials. It compares SHA-256
// digests in constant time, so neither the length nor the content of a
// secret leaks through the response time.
type authenticator struct {
	token, user, pass  [sha256.Size]byte
	hasToken, hasBasic bool
}

func newAuthenticator(h *HTTPConfig) *authenticator {
	if !h.credentials() {
		return nil
	}
	a := &authenticator{hasToken: h.Token.V != "", hasBasic: h.Username.V != "" && h.Password.V != ""}
	a.token = sha256.Sum256([]byte(h.Token.V))
	a.user = sha256.Sum256([]byte(h.Username.V))
	a.pass = sha256.Sum256([]byte(h.Password.V))
	return a
}

func equalSecret(given string, want [sha256.Size]byte) bool {
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// ok reports whether r carries the credentials: the token as a bearer
// token, or basic auth with the user name and password, or with the token
// as the password (any user name), which is what a browser's login prompt
// can send.
func (a *authenticator) ok(r *http.Request) bool {
	if a == nil {
		return true
	}
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") {
		return a.hasToken && equalSecret(strings.TrimSpace(cred), a.token)
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	userOK, passOK, tokenOK := equalSecret(user, a.user), equalSecret(pass, a.pass), equalSecret(pass, a.token)
	return a.hasBasic && userOK && passOK || a.hasToken && tokenOK
}

func (a *authenticator) challenge(h http.Header) {
	h.Add("WWW-Authenticate", `Basic realm="unsgate", charset="UTF-8"`)
	if a.hasToken {
		h.Add("WWW-Authenticate", `Bearer realm="unsgate"`)
	}
}
