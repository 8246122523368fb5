package gateway

// The status page in a real browser: Debian's Chromium, headless, driven
// over the DevTools protocol. It runs with UNSGATE_INTEROP=1 (CI, after
// .ci/browser.sh installed chromium); there a missing browser is a failure.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// pageState is what the test reads off the rendered page.
type pageState struct {
	Rows []struct {
		Path, Value, Quality string
	}
	Sources, Sinks []struct {
		Name, State string
	}
	Version     string
	Stream      string
	SparkPoints int
	// Overflow is how far the page is wider than the window (phone check).
	Overflow int
}

const readPage = `(() => {
	const cells = (sel) => [...document.querySelectorAll(sel)];
	const line = document.getElementById('spark-line');
	return {
		Rows: cells('#tags tbody tr[data-path]').map(r => ({
			Path: r.dataset.path,
			Value: (r.querySelector('td.value') || {}).textContent || '',
			Quality: r.dataset.quality || ''})),
		Sources: cells('#sources tr[data-name]').map(r => ({Name: r.dataset.name, State: r.querySelector('td.state').dataset.state})),
		Sinks: cells('#sinks tr[data-name]').map(r => ({Name: r.dataset.name, State: r.querySelector('td.state').dataset.state})),
		Version: document.getElementById('model-version').textContent,
		Stream: document.getElementById('stream').dataset.state,
		SparkPoints: line ? line.getAttribute('points').trim().split(/\s+/).filter(Boolean).length : 0,
		Overflow: document.documentElement.scrollWidth - window.innerWidth,
	};
})()`

func TestStatusPageInBrowser(t *testing.T) {
	if os.Getenv("UNSGATE_INTEROP") != "1" {
		t.Skip("browser test: set UNSGATE_INTEROP=1 (after .ci/browser.sh installed chromium)")
	}
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not installed (.ci/browser.sh installs it): %v", err)
	}

	g, _ := startDemo(t, DemoOptions{Seed: 11})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 90*time.Second)
	defer tcancel()

	if _, err := chromedp.Run(bctx, chromedp.Navigate(g.StatusURL())); err != nil {
		t.Fatalf("open %s: %v", g.StatusURL(), err)
	}
	read := func() pageState {
		t.Helper()
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[json.RawMessage](readPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		var st pageState
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("page state %s: %v", raw, err)
		}
		return st
	}
	var st pageState
	until := func(what string, within time.Duration, cond func(pageState) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for st = read(); !cond(st); st = read() {
			if time.Now().After(deadline) {
				shot(t, bctx, "status-page-failed.png")
				t.Fatalf("page: timed out waiting for %s; last state %+v", what, st)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	const speed = "acme/munich/bottling/line1/filler1/speed"
	valueOf := func(st pageState, path string) (string, string) {
		for _, r := range st.Rows {
			if r.Path == path {
				return r.Value, r.Quality
			}
		}
		return "", ""
	}

	// Live: the tag table fills, every source and sink is up, and the
	// model version is the one the gateway runs.
	until("a GOOD speed value, sources and sinks up", 30*time.Second, func(st pageState) bool {
		v, q := valueOf(st, speed)
		if v == "" || q != "GOOD" || len(st.Sources) != 2 || len(st.Sinks) == 0 || st.Stream != "live" {
			return false
		}
		for _, s := range append(st.Sources, st.Sinks...) {
			if s.State != "connected" {
				return false
			}
		}
		return true
	})
	if len(st.Rows) < 20 {
		t.Errorf("tag table shows %d tags, want the demo's (dozens)", len(st.Rows))
	}
	if want := g.ModelVersion(); want == "" || !strings.Contains(st.Version, want) {
		t.Errorf("model version on the page %q, want %q", st.Version, want)
	}
	first, _ := valueOf(st, speed)
	until("the speed value to change without a reload", 20*time.Second, func(st pageState) bool {
		v, _ := valueOf(st, speed)
		return v != "" && v != first
	})

	// Selecting a tag draws its sparkline; the filter narrows the table.
	if _, err := chromedp.Run(bctx, chromedp.Click(chromedp.CSS(`#tags tr[data-path="`+speed+`"]`))); err != nil {
		t.Fatalf("select %s: %v", speed, err)
	}
	until("a sparkline of the selected tag", 20*time.Second, func(st pageState) bool { return st.SparkPoints >= 3 })
	if _, err := chromedp.Run(bctx, chromedp.SendKeys(chromedp.CSS("#filter"), "filler1/")); err != nil {
		t.Fatalf("type a filter: %v", err)
	}
	until("only filler1 tags in the table", 10*time.Second, func(st pageState) bool {
		if len(st.Rows) == 0 {
			return false
		}
		for _, r := range st.Rows {
			if !strings.Contains(r.Path, "filler1/") {
				return false
			}
		}
		return true
	})
	shot(t, bctx, "status-page.png")

	// On a phone's width the page reflows instead of scrolling sideways.
	if _, err := chromedp.Run(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatalf("phone viewport: %v", err)
	}
	until("the page to fit a phone's width", 10*time.Second, func(st pageState) bool { return st.Overflow <= 0 })
	shot(t, bctx, "status-page-phone.png")
}

// shot saves a full-page screenshot for a person to look at, in
// $UNSGATE_ARTIFACTS (CI sets it) or the temporary folder.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("UNSGATE_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", path)
}
