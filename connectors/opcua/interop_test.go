package opcua

// Interop tests against node-opcua, an independent OPC UA implementation
// that, unlike gopcua's test server, checks client certificates and user
// names. They run when UNSGATE_INTEROP=1 (CI sets it after
// .ci/interop-opcua.sh installed node and testdata/interop/opcua's
// node_modules); then a missing node or node_modules is a failure, not a
// skip. The server script is testdata/interop/opcua/server.js.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

const (
	interopDir = "../../testdata/interop/opcua"
	interopNS  = "urn:unsgate:interop"
)

// nodeServer is one running server.js.
type nodeServer struct {
	endpoint string
	dir      string // its PKI root (pki/, userpki/, server_cert.der)
	cert     []byte // its certificate, DER
	stdin    io.Writer
	lines    chan string // its stdout after READY
}

// command sends a command line to the server and returns its answer, the
// next line starting with want or with ERROR.
func (n *nodeServer) command(t *testing.T, cmd, want string) string {
	t.Helper()
	if _, err := io.WriteString(n.stdin, cmd+"\n"); err != nil {
		t.Fatalf("server.js %s: %v", cmd, err)
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-n.lines:
			if !ok {
				t.Fatalf("server.js %s: the server exited", cmd)
			}
			if strings.HasPrefix(line, "ERROR") {
				t.Fatalf("server.js %s: %s", cmd, line)
			}
			if strings.HasPrefix(line, want) {
				return line
			}
		case <-timeout:
			t.Fatalf("server.js %s: no %s answer within 20s", cmd, want)
		}
	}
}

// startNodeServers starts one server.js per argument list in parallel (the
// first start of each spends seconds making its key) and stops them when
// the test ends.
func startNodeServers(t *testing.T, argLists ...[]string) []*nodeServer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (UNSGATE_INTEROP=1 needs it; run .ci/interop-opcua.sh): %v", err)
	}
	if _, err := os.Stat(filepath.Join(interopDir, "node_modules", "node-opcua", "package.json")); err != nil {
		t.Fatalf("node-opcua is not installed in %s (run .ci/interop-opcua.sh): %v", interopDir, err)
	}
	servers := make([]*nodeServer, len(argLists))
	errs := make([]error, len(argLists))
	var wg sync.WaitGroup
	for i, args := range argLists {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = startNodeServer(t, node, args)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return servers
}

func startNodeServer(t *testing.T, node string, args []string) (*nodeServer, error) {
	port, err := interopPort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	cmd := exec.Command(node, append([]string{"server.js", "--port", strconv.Itoa(port), "--dir", dir}, args...)...)
	cmd.Dir = interopDir
	stdin, err := cmd.StdinPipe() // closing it stops the server
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var output interopBuffer // stdout and stderr, shown when the test fails
	cmd.Stderr = &output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node server.js: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("node server.js %v output:\n%s", args, output.String())
		}
	})

	ready := make(chan string, 1)
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		up := false
		for sc.Scan() {
			fmt.Fprintln(&output, sc.Text())
			if url, ok := strings.CutPrefix(sc.Text(), "READY "); ok && !up {
				up = true
				ready <- url
				continue
			}
			if up && (strings.HasPrefix(sc.Text(), "TRUSTED") || strings.HasPrefix(sc.Text(), "ERROR")) {
				lines <- sc.Text()
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case url := <-ready:
		cert, err := os.ReadFile(filepath.Join(dir, "server_cert.der"))
		if err != nil {
			return nil, err
		}
		return &nodeServer{endpoint: url, dir: dir, cert: cert, stdin: stdin, lines: lines}, nil
	case <-exited:
		return nil, fmt.Errorf("node server.js %v exited before it was ready:\n%s", args, output.String())
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("node server.js %v not ready after 60s:\n%s", args, output.String())
	}
}

func interopPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type interopBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *interopBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *interopBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// interopConfig is a gateway config for srv with its own PKI directory,
// trusting srv's certificate when trust is set.
func interopConfig(t *testing.T, srv *nodeServer, trust bool) *Config {
	dir := t.TempDir()
	if trust {
		secWrite(t, filepath.Join(dir, "trusted", "node-opcua.der"), srv.cert)
	}
	return &Config{
		Name: "ua-interop", Endpoint: srv.endpoint, PKIDir: dir,
		SecurityPolicy: "Basic256Sha256", SecurityMode: "SignAndEncrypt",
		Username: "operator", Password: "secret", Timeout: 5 * time.Second,
	}
}

// readSpeed reads the Speed variable's value and source timestamp.
func readSpeed(t *testing.T, c *opcua.Client) (float64, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nid, err := ua.ParseNodeID("ns=" + strconv.Itoa(interopNSIndex(t, c, interopNS)) + ";s=Line2.Filler1.Speed")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: nid, AttributeID: ua.AttributeIDValue}}, TimestampsToReturn: ua.TimestampsToReturnBoth})
	if err != nil {
		t.Fatalf("read Speed: %v", err)
	}
	dv := res.Results[0]
	if dv.Status != ua.StatusOK || dv.Value == nil {
		t.Fatalf("read Speed: status %v", dv.Status)
	}
	v, ok := dv.Value.Value().(float64)
	if !ok {
		t.Fatalf("Speed is %T, want float64", dv.Value.Value())
	}
	return v, dv.SourceTimestamp
}

func interopNSIndex(t *testing.T, c *opcua.Client, uri string) int {
	for i, u := range c.Namespaces() {
		if u == uri {
			return i
		}
	}
	t.Fatalf("server has no namespace %s: %v", uri, c.Namespaces())
	return 0
}

func TestInteropNodeOPCUA(t *testing.T) {
	if os.Getenv("UNSGATE_INTEROP") != "1" {
		t.Skip("interop test against node-opcua: set UNSGATE_INTEROP=1 (after .ci/interop-opcua.sh installed node and node-opcua)")
	}
	begin := time.Now()
	srvs := startNodeServers(t,
		// accepts any client certificate; offers every policy and mode
		[]string{"--accept-unknown", "--policies", "None,Basic256Sha256,Aes128_Sha256_RsaOaep,Aes256_Sha256_RsaPss", "--modes", "None,Sign,SignAndEncrypt"},
		// accepts only client certificates in its trusted folder
		[]string{"--policies", "Basic256Sha256", "--modes", "SignAndEncrypt"},
	)
	open, strict := srvs[0], srvs[1]
	t.Logf("node-opcua servers up after %v", time.Since(begin).Round(time.Millisecond))

	t.Run("SignAndEncryptUserTrusted", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		c, err := secConnect(t, cfg, secLog())
		if err != nil {
			t.Fatal(err)
		}
		// Values arrive and move (the script changes them every 100 ms).
		v0, ts0 := readSpeed(t, c)
		deadline := time.Now().Add(5 * time.Second)
		for {
			v, ts := readSpeed(t, c)
			if v != v0 && ts.After(ts0) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Speed stuck at %v (%v)", v, ts)
			}
			time.Sleep(50 * time.Millisecond) // the server's own pace; polled with a deadline
		}
	})

	t.Run("SourceRunsOverSignAndEncrypt", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		cfg.Tags = []Tag{
			{Addr: model.OPCUAAddress{NamespaceURI: interopNS, IDType: 's', ID: "Line2.Filler1.Speed"}},
			{Addr: model.OPCUAAddress{BrowsePath: []string{"Objects", "Line2", "Filler1", "Count"}}},
		}
		cfg.PublishingInterval = 100 * time.Millisecond
		src, err := New(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var mu sync.Mutex
		good := map[string]map[string]bool{} // key -> distinct values seen GOOD
		done := make(chan struct{})
		var once sync.Once
		errc := make(chan error, 1)
		go func() {
			errc <- src.Run(ctx, func(batch []model.Sample) {
				mu.Lock()
				defer mu.Unlock()
				for _, s := range batch {
					if s.Quality == model.QualityGood {
						if good[s.Address] == nil {
							good[s.Address] = map[string]bool{}
						}
						good[s.Address][s.Value.String()] = true
					}
				}
				if len(good[cfg.Tags[0].Addr.Key()]) >= 3 && len(good[cfg.Tags[1].Addr.Key()]) >= 3 {
					once.Do(func() { close(done) })
				}
			})
		}()
		select {
		case <-done:
			cancel()
		case err := <-errc:
			t.Fatalf("source stopped: %v", err)
		case <-ctx.Done():
			mu.Lock()
			t.Fatalf("no changing GOOD values within 20s: %v", good)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	})

	// The liveness item on CurrentTime: an independent server samples it at
	// its own rate, and a healthy session must outlive several KeepAlives.
	// Its samples must not show up as a tag's (node-opcua ignores client
	// handles 0 and 0xFFFFFFFF and reports such items with handle 0).
	t.Run("SessionOutlivesKeepAlive", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		cfg.Tags = []Tag{{Addr: model.OPCUAAddress{NamespaceURI: interopNS, IDType: 's', ID: "Line2.Filler1.Speed"}}}
		cfg.PublishingInterval = 100 * time.Millisecond
		cfg.KeepAlive = time.Second
		src, err := New(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		var samples atomic.Int64
		var mu sync.Mutex
		var strays []string
		if err := src.Run(ctx, func(b []model.Sample) {
			samples.Add(int64(len(b)))
			for _, s := range b {
				if s.Quality == model.QualityGood && s.Value.Kind() != model.KindFloat {
					mu.Lock()
					strays = append(strays, s.Value.String())
					mu.Unlock()
				}
			}
		}); err != nil {
			t.Fatalf("Run over 4 KeepAlives: %v", err)
		}
		if len(strays) > 0 {
			t.Fatalf("Speed (a Double) reported as %q", strays)
		}
		if st := src.Stats(); st.Connects != 1 || st.Errors != 0 || samples.Load() == 0 {
			t.Fatalf("stats %+v, %d samples: want one session, no error, values", st, samples.Load())
		}
	})

	t.Run("AutoChoosesStrongest", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		cfg.SecurityPolicy, cfg.SecurityMode = "", ""
		rec := &secRecorder{}
		c, err := secConnect(t, cfg, slog.New(rec))
		if err != nil {
			t.Fatal(err)
		}
		readSpeed(t, c)
		if l := rec.find("chose endpoint"); !strings.Contains(l, "policy=Aes256_Sha256_RsaPss mode=SignAndEncrypt") {
			t.Errorf("chose %q", l)
		}
	})

	t.Run("ServerRefusesGatewayCertificate", func(t *testing.T) {
		cfg := interopConfig(t, strict, true)
		_, err := secConnect(t, cfg, secLog())
		if !errors.Is(err, ErrGatewayCertRejected) || errors.Is(err, connectors.ErrConfig) {
			t.Fatalf("err = %v, want ErrGatewayCertRejected (not a configuration error: the other side fixes it)", err)
		}
		own, rerr := os.ReadFile(filepath.Join(cfg.PKIDir, "own", "cert.der"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		thumb := sha1Hex(own)
		for _, want := range []string{filepath.Join(cfg.PKIDir, "own", "cert.der"), thumb, "BadSecurityChecksFailed", "administrator"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %q:\n%v", want, err)
			}
		}
		// Supervised sources: the refused one keeps retrying (the fix is on
		// the server's side) while a source on another server keeps
		// delivering.
		speed := []Tag{{Addr: model.OPCUAAddress{NamespaceURI: interopNS, IDType: 's', ID: "Line2.Filler1.Speed"}}}
		refusedCfg := *cfg
		refusedCfg.Name, refusedCfg.Tags, refusedCfg.PublishingInterval = "refused", speed, 100*time.Millisecond
		otherCfg := *interopConfig(t, open, true)
		otherCfg.Name, otherCfg.Tags, otherCfg.PublishingInterval = "other", speed, 100*time.Millisecond
		refused, err := New(refusedCfg)
		if err != nil {
			t.Fatal(err)
		}
		other, err := New(otherCfg)
		if err != nil {
			t.Fatal(err)
		}
		backoff := connectors.Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}
		supRefused := connectors.NewSupervisor(refused, backoff, secLog())
		supOther := connectors.NewSupervisor(other, backoff, secLog())
		var mu sync.Mutex
		goodBy := map[string]int{}
		emit := func(batch []model.Sample) {
			mu.Lock()
			defer mu.Unlock()
			for _, smp := range batch {
				if smp.Quality == model.QualityGood {
					goodBy[smp.Source]++
				}
			}
		}
		good := func(src string) int { mu.Lock(); defer mu.Unlock(); return goodBy[src] }
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, sup := range []*connectors.Supervisor{supRefused, supOther} {
			wg.Add(1)
			go func() { defer wg.Done(); sup.Run(ctx, emit) }()
		}
		defer func() { cancel(); wg.Wait() }()

		waitFor := func(what string, d time.Duration, cond func() bool) {
			t.Helper()
			deadline := time.Now().Add(d)
			for !cond() {
				if time.Now().After(deadline) {
					t.Fatalf("%s: not within %v (refused: %+v, GOOD samples: refused %d, other %d)", what, d, supRefused.Status(), good("refused"), good("other"))
				}
				time.Sleep(50 * time.Millisecond) // polled with a deadline
			}
		}
		waitFor("refused source retrying while the other delivers", 15*time.Second, func() bool {
			st := supRefused.Status()
			return st.Failures >= 2 && st.State != connectors.StateFailed && strings.Contains(st.LastError, ErrGatewayCertRejected.Error()) &&
				good("other") >= 3 && good("refused") == 0
		})

		// The administrator's side: node-opcua put the gateway's
		// certificate in its rejected folder; trusting it lets the gateway
		// in with the same identity, and the supervised source recovers by
		// itself.
		if findNodeCert(t, filepath.Join(strict.dir, "pki", "rejected"), thumb) == "" {
			t.Fatalf("node-opcua did not reject certificate %s", thumb)
		}
		strict.command(t, "trust-rejected", "TRUSTED")
		waitFor("refused source recovers after the server trusts the gateway", 15*time.Second, func() bool { return good("refused") >= 2 })
		c, err := secConnect(t, cfg, secLog())
		if err != nil {
			t.Fatalf("connect after trusting the gateway on the server: %v", err)
		}
		readSpeed(t, c)
	})

	t.Run("GatewayRefusesUntrustedServer", func(t *testing.T) {
		cfg := interopConfig(t, open, false)
		_, err := secConnect(t, cfg, secLog())
		if !errors.Is(err, ErrServerCertUntrusted) || errors.Is(err, connectors.ErrConfig) {
			t.Fatalf("err = %v, want ErrServerCertUntrusted", err)
		}
		leaf, perr := x509.ParseCertificate(open.cert)
		if perr != nil {
			t.Fatal(perr)
		}
		thumb := sha1Hex(leaf.Raw)
		name := certFileName(leaf, thumb)
		rejected := filepath.Join(cfg.PKIDir, "rejected", name)
		trusted := filepath.Join(cfg.PKIDir, "trusted", name)
		for _, want := range []string{thumb, leaf.Subject.CommonName, rejected, trusted} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %q:\n%v", want, err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(trusted), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(rejected, trusted); err != nil {
			t.Fatalf("move the rejected certificate as the error says: %v", err)
		}
		c, err := secConnect(t, cfg, secLog())
		if err != nil {
			t.Fatalf("after trusting the server: %v", err)
		}
		readSpeed(t, c)
	})

	t.Run("WrongPassword", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		cfg.Password = "wrong"
		_, err := secConnect(t, cfg, secLog())
		if !errors.Is(err, ErrUserRejected) || !strings.Contains(err.Error(), `user "operator"`) || !strings.Contains(err.Error(), "BadUserAccessDenied") {
			t.Fatalf("err = %v, want ErrUserRejected naming the user", err)
		}
	})

	t.Run("UserNameOverPolicyNone", func(t *testing.T) {
		// The password is encrypted with the user token policy's security,
		// the server's certificate still checked against trusted/.
		cfg := interopConfig(t, open, true)
		cfg.SecurityPolicy, cfg.SecurityMode = "None", "None"
		c, err := secConnect(t, cfg, secLog())
		if err != nil {
			t.Fatal(err)
		}
		readSpeed(t, c)
		if _, err := os.Stat(filepath.Join(cfg.PKIDir, "own")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("an identity was created for an unsecured channel: %v", err)
		}
	})

	t.Run("AnonymousNotOffered", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		cfg.Username, cfg.Password = "", ""
		_, err := secConnect(t, cfg, secLog())
		if err == nil || !strings.Contains(err.Error(), "anonymous login") || !strings.Contains(err.Error(), "Basic256Sha256/SignAndEncrypt (user name, certificate)") {
			t.Fatalf("err = %v, want the offered endpoints", err)
		}
	})

	t.Run("BrowseAndSkeleton", func(t *testing.T) {
		cfg := interopConfig(t, open, true)
		var nodes []BrowsedNode
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := Browse(ctx, *cfg, "", 0, func(n BrowsedNode) error { nodes = append(nodes, n); return nil }); err != nil {
			t.Fatal(err)
		}
		got := secByPath(nodes)
		ns := "nsu=" + interopNS + ";s=Line2.Filler1."
		for _, w := range []BrowsedNode{
			{BrowsePath: "/Objects/Line2/Filler1/Speed", NodeID: ns + "Speed", DataType: "Double", Access: "read"},
			{BrowsePath: "/Objects/Line2/Filler1/Count", NodeID: ns + "Count", DataType: "Int32", Access: "read"},
			{BrowsePath: "/Objects/Line2/Filler1/Running", NodeID: ns + "Running", DataType: "Boolean", Access: "read"},
			{BrowsePath: "/Objects/Line2/Filler1/Recipe", NodeID: ns + "Recipe", DataType: "String", Access: "read"},
			{BrowsePath: "/Objects/Line2/Filler1/Temperatures", NodeID: ns + "Temperatures", DataType: "Double[]", Access: "read"},
			{BrowsePath: "/Objects/Line2/Filler1/Setpoint", NodeID: ns + "Setpoint", DataType: "Double", Access: "read/write"},
		} {
			n, ok := got[w.BrowsePath]
			if !ok || n.NodeID != w.NodeID || n.DataType != w.DataType || n.Access != w.Access || n.Class != "Variable" {
				t.Errorf("%s: got %+v, want %+v", w.BrowsePath, n, w)
			}
		}
		if _, ok := got["/Objects/Server"]; ok {
			t.Error("the standard Server object was listed")
		}
		var buf bytes.Buffer
		if err := Skeleton(&buf, nodes, "ua-interop"); err != nil {
			t.Fatal(err)
		}
		m, err := model.LoadFiles([]model.File{{Name: "skeleton.yaml", Data: buf.Bytes()}})
		if err != nil {
			t.Fatalf("skeleton does not load: %v\n%s", err, buf.String())
		}
		if n := len(m.Assets[0].Tags); n != 6 {
			t.Errorf("%d tags, want 6:\n%s", n, buf.String())
		}
	})
	t.Logf("interop suite took %v", time.Since(begin).Round(time.Millisecond))
}

// findNodeCert returns the file in dir (node-opcua's PEM certificates)
// holding the certificate with thumbprint thumb, or "".
func findNodeCert(t *testing.T, dir, thumb string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if b, _ := pem.Decode(data); b != nil && sha1Hex(b.Bytes) == thumb {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}
