package opcua

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/connectors/sim"
)

func TestCheckSecurity(t *testing.T) {
	ok := []Config{
		{PKIDir: "/pki"},
		{PKIDir: "/pki", SecurityPolicy: "Basic256Sha256", SecurityMode: "SignAndEncrypt", Username: "u", Password: "p"},
		{PKIDir: "/pki", SecurityPolicy: "Aes128_Sha256_RsaOaep", SecurityMode: "Sign"},
		{PKIDir: "/pki", SecurityPolicy: "aes256sha256rsapss"},
		{PKIDir: "/pki", SecurityPolicy: ua.SecurityPolicyURIBasic256Sha256},
		{PKIDir: "/pki", SecurityPolicy: "Basic128Rsa15", AllowInsecurePolicies: true},
		{PKIDir: "/pki", SecurityPolicy: "Basic256", SecurityMode: "Sign", AllowInsecurePolicies: true},
		{SecurityPolicy: "None", AcceptAnyServerCert: true},
		{SecurityMode: "None", AcceptAnyServerCert: true},
		{CertFile: "c.der", KeyFile: "k.pem", AcceptAnyServerCert: true},
		{PKIDir: "/pki", SecurityPolicy: "None", SecurityMode: "None", ApplicationURI: "urn:acme:gw"},
	}
	for _, cfg := range ok {
		if probs := CheckSecurity(&cfg); len(probs) != 0 {
			t.Errorf("%+v: unexpected problems %q", cfg, probs)
		}
	}
	bad := []struct {
		cfg  Config
		want []string // one pattern per expected problem, in order
	}{
		{Config{PKIDir: "/p", SecurityPolicy: "Basic512"}, []string{`^security_policy "Basic512" is not known; use None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss`}},
		{Config{PKIDir: "/p", SecurityPolicy: "Basic128Rsa15"}, []string{`^security_policy Basic128Rsa15 is deprecated and insecure.*allow_insecure_policies: true`}},
		{Config{PKIDir: "/p", SecurityPolicy: "Basic256"}, []string{`^security_policy Basic256 is deprecated`}},
		{Config{PKIDir: "/p", SecurityMode: "Encrypt"}, []string{`^security_mode "Encrypt" is not known; use None, Sign or SignAndEncrypt`}},
		{Config{PKIDir: "/p", SecurityPolicy: "None", SecurityMode: "Sign"}, []string{`^security_mode Sign needs a security policy that signs.*security_policy None only goes with security_mode None`}},
		{Config{PKIDir: "/p", SecurityPolicy: "Basic256Sha256", SecurityMode: "None"}, []string{`^security_mode None only goes with security_policy None; security_policy Basic256Sha256 needs`}},
		{Config{PKIDir: "/p", Password: "x"}, []string{`^password is set but username is not`}},
		{Config{PKIDir: "/p", CertFile: "c"}, []string{`^cert_file is set but key_file is not`}},
		{Config{PKIDir: "/p", KeyFile: "k"}, []string{`^key_file is set but cert_file is not`}},
		{Config{}, []string{`^pki_dir is required: .*own certificate.*cert_file and key_file.*accept_any_server_cert`}},
		{Config{AcceptAnyServerCert: true}, []string{`^pki_dir is required for a secured connection.*cert_file and key_file`}},
		{Config{SecurityPolicy: "None"}, []string{`^pki_dir is required: the gateway trusts only .*accept_any_server_cert: true`}},
		{Config{CertFile: "c", KeyFile: "k"}, []string{`^pki_dir is required: the gateway trusts only`}},
		{Config{PKIDir: "/p", ApplicationURI: "not a uri"}, []string{`^application_uri "not a uri" is not a URI`}},
		{Config{SecurityPolicy: "Basic128Rsa15", SecurityMode: "Fast", Password: "x"}, []string{`^security_policy Basic128Rsa15`, `^security_mode "Fast"`, `^password`, `^pki_dir`}},
	}
	for _, tc := range bad {
		probs := CheckSecurity(&tc.cfg)
		if len(probs) != len(tc.want) {
			t.Errorf("%+v: problems %q, want %d", tc.cfg, probs, len(tc.want))
			continue
		}
		for i, p := range probs {
			if !regexp.MustCompile(tc.want[i]).MatchString(p) {
				t.Errorf("%+v: problem %q does not match %q", tc.cfg, p, tc.want[i])
			}
		}
	}
}

func secEP(policy string, mode ua.MessageSecurityMode, level uint8, tokens ...ua.UserTokenType) *ua.EndpointDescription {
	e := &ua.EndpointDescription{
		EndpointURL:         "opc.tcp://x:4840",
		SecurityPolicyURI:   ua.SecurityPolicyURIPrefix + policy,
		SecurityMode:        mode,
		SecurityLevel:       level,
		TransportProfileURI: binaryTransport,
	}
	for _, t := range tokens {
		e.UserIdentityTokens = append(e.UserIdentityTokens, &ua.UserTokenPolicy{PolicyID: fmt.Sprint(t), TokenType: t})
	}
	return e
}

func TestChooseEndpoint(t *testing.T) {
	const (
		none = ua.MessageSecurityModeNone
		sign = ua.MessageSecurityModeSign
		enc  = ua.MessageSecurityModeSignAndEncrypt
		anon = ua.UserTokenTypeAnonymous
		user = ua.UserTokenTypeUserName
	)
	typical := []*ua.EndpointDescription{
		secEP("None", none, 0, anon),
		secEP("Basic128Rsa15", enc, 200, anon, user), // the server ranks it highest: still refused
		secEP("Basic256Sha256", sign, 3, anon, user),
		secEP("Basic256Sha256", enc, 4, anon, user),
	}
	for _, tc := range []struct {
		name string
		eps  []*ua.EndpointDescription
		cfg  Config
		want string // policy/mode, or "error: pattern"
	}{
		{"most secure allowed", typical, Config{}, "Basic256Sha256/SignAndEncrypt"},
		{"insecure allowed and ranked by strength", typical, Config{AllowInsecurePolicies: true}, "Basic256Sha256/SignAndEncrypt"},
		{"configured insecure", typical, Config{AllowInsecurePolicies: true, SecurityPolicy: "Basic128Rsa15"}, "Basic128Rsa15/SignAndEncrypt"},
		{"configured mode", typical, Config{SecurityMode: "Sign"}, "Basic256Sha256/Sign"},
		{"configured None", typical, Config{SecurityPolicy: "None"}, "None/None"},
		{"mode None", typical, Config{SecurityMode: "None"}, "None/None"},
		{"user name", typical, Config{Username: "u"}, "Basic256Sha256/SignAndEncrypt"},
		{"stronger policies", []*ua.EndpointDescription{
			secEP("Basic256Sha256", enc, 9, anon), secEP("Aes256_Sha256_RsaPss", sign, 1, anon),
			secEP("Aes128_Sha256_RsaOaep", enc, 5, anon), secEP("Aes256_Sha256_RsaPss", enc, 2, anon),
		}, Config{}, "Aes256_Sha256_RsaPss/SignAndEncrypt"},
		{"None when nothing else", []*ua.EndpointDescription{secEP("None", none, 0, anon), secEP("Basic128Rsa15", sign, 1, anon)}, Config{}, "None/None"},
		{"no tokens listed means anonymous", []*ua.EndpointDescription{secEP("Basic256Sha256", enc, 1)}, Config{}, "Basic256Sha256/SignAndEncrypt"},
		{"other transports skipped", []*ua.EndpointDescription{
			func() *ua.EndpointDescription {
				e := secEP("Aes256_Sha256_RsaPss", enc, 9, anon)
				e.TransportProfileURI = "http://opcfoundation.org/UA-Profile/Transport/https-uabinary"
				return e
			}(), secEP("Basic256Sha256", sign, 1, anon),
		}, Config{}, "Basic256Sha256/Sign"},
		{"no user-name endpoint", []*ua.EndpointDescription{secEP("None", none, 0, anon), secEP("Basic256Sha256", enc, 1, anon)}, Config{Username: "op"},
			`error: no endpoint of the server fits user name login, no deprecated policy.*; the server offers: None/None \(anonymous\); Basic256Sha256/SignAndEncrypt \(anonymous\)`},
		{"only insecure offered", []*ua.EndpointDescription{secEP("Basic128Rsa15", enc, 1, anon)}, Config{},
			`error: .*allow_insecure_policies is off.*offers: Basic128Rsa15/SignAndEncrypt \(anonymous\)`},
		{"configured policy missing", typical, Config{SecurityPolicy: "Aes256_Sha256_RsaPss"},
			`error: no endpoint of the server fits security_policy Aes256_Sha256_RsaPss, anonymous login`},
		{"no endpoints", nil, Config{}, `error: .*offers: no endpoints`},
	} {
		got, err := chooseEndpoint(tc.eps, &tc.cfg)
		if pattern, ok := strings.CutPrefix(tc.want, "error: "); ok {
			if err == nil || !regexp.MustCompile(pattern).MatchString(err.Error()) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, pattern)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		p, _ := secPolicyByURI(got.SecurityPolicyURI)
		if s := p.name + "/" + secModeName(got.SecurityMode); s != tc.want {
			t.Errorf("%s: chose %s, want %s", tc.name, s, tc.want)
		}
	}
}

// secSim is one sim server shared by the tests that only read from it:
// gopcua's server takes seconds to start under the race detector. It is
// Secure (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss in
// Sign and SignAndEncrypt, and None) with user names, has an extra namespace
// before its own (so its index is not the usual 2) and a small plant. It
// lives until the test binary exits.
var secSim struct {
	once sync.Once
	srv  *sim.OPCUAServer
	err  error
}

func secStartSim(t *testing.T) *sim.OPCUAServer {
	t.Helper()
	secSim.once.Do(func() {
		srv, err := sim.StartOPCUA(sim.OPCUAOptions{Secure: true, UserName: true, ExtraNamespaces: []string{"urn:other"}})
		if err != nil {
			secSim.err = err
			return
		}
		srv.AddVariable("Line2/Filler1/Speed", 1.5)
		srv.AddVariable("Line2/Filler1/Count", int32(7))
		srv.AddVariable("Line2/Filler1/Running", true)
		srv.AddVariable("Line2/Filler1/Recipe", "r1")
		srv.AddVariable("Line2/Filler1/Temperatures", []float64{20, 21})
		srv.AddVariable("Line2/Filler1/Fill level (ml)", float32(330), "i=1001")
		srv.AddVariable("Line2/Filler2/Speed", 2.5)
		secSim.srv = srv
	})
	if secSim.err != nil {
		t.Fatal(secSim.err)
	}
	return secSim.srv
}

// secTrustSim puts the sim server's certificate into dir/trusted.
func secTrustSim(t *testing.T, srv *sim.OPCUAServer, dir string) {
	t.Helper()
	secWrite(t, filepath.Join(dir, "trusted", "sim.der"), srv.Certificate())
}

// secRecorder is a slog handler keeping every record's message and
// attributes as text.
type secRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *secRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *secRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}
func (r *secRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *secRecorder) WithGroup(string) slog.Handler      { return r }
func (r *secRecorder) find(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// secReadState reads Server_ServerStatus_State through c: proof of a working
// session.
func secReadState(t *testing.T, c *opcua.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_State), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		t.Fatalf("read over the new session: %v", err)
	}
	if len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK {
		t.Fatalf("read server state: %+v", res.Results)
	}
}

func secConnect(t *testing.T, cfg *Config, log *slog.Logger) (*opcua.Client, error) {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := connect(ctx, cfg, log, nil)
	if err == nil {
		t.Cleanup(func() { closeQuietly(c, time.Second) })
	}
	return c, err
}

func TestConnectSimChoosesStrongest(t *testing.T) {
	srv := secStartSim(t)
	dir := t.TempDir()
	secTrustSim(t, srv, dir)

	// The choice among what the sim really offers.
	eps, err := opcua.GetEndpoints(context.Background(), srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	got, err := chooseEndpoint(eps, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The sim offers Basic256Sha256, Aes128_Sha256_RsaOaep and
	// Aes256_Sha256_RsaPss in both modes, and None.
	if got.SecurityPolicyURI != ua.SecurityPolicyURIAes256Sha256RsaPss || got.SecurityMode != ua.MessageSecurityModeSignAndEncrypt {
		t.Errorf("chose %s %s from %s", got.SecurityPolicyURI, got.SecurityMode, describeEndpoints(eps))
	}

	rec := &secRecorder{}
	var states []opcua.ConnState
	var mu sync.Mutex
	cfg := &Config{Name: "ua1", Endpoint: srv.Endpoint(), PKIDir: dir, Timeout: 5 * time.Second}
	c, err := connect(context.Background(), cfg, slog.New(rec), func(s opcua.ConnState) { mu.Lock(); states = append(states, s); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(c, time.Second)
	secReadState(t, c)
	mu.Lock()
	if !slices.Contains(states, opcua.Connected) {
		t.Errorf("onState saw %v, want Connected", states)
	}
	mu.Unlock()
	// The identity was created and is what the channel uses.
	own, err := os.ReadFile(filepath.Join(dir, "own", "cert.der"))
	if err != nil {
		t.Fatal(err)
	}
	if sc := c.SecureChannel(); sc == nil {
		t.Fatal("no secure channel")
	}
	if _, err := x509.ParseCertificate(own); err != nil {
		t.Fatal(err)
	}
	if l := rec.find("chose endpoint"); !strings.Contains(l, "policy=Aes256_Sha256_RsaPss mode=SignAndEncrypt") {
		t.Errorf("connect chose %q", l)
	}
	if l := rec.find("accept"); l != "" {
		t.Errorf("unexpected log %q", l)
	}
}

func TestConnectSimBasic256Sha256SignAndEncryptUser(t *testing.T) {
	srv := secStartSim(t)
	dir := t.TempDir()
	secTrustSim(t, srv, dir)
	cfg := &Config{Name: "ua1", Endpoint: srv.Endpoint(), PKIDir: dir, SecurityPolicy: "Basic256Sha256", SecurityMode: "SignAndEncrypt", Username: "operator", Password: "secret"}
	c, err := secConnect(t, cfg, secLog())
	if err != nil {
		t.Fatal(err)
	}
	secReadState(t, c)

	// The same identity on the next connect (the server trusts it once).
	before, _ := os.ReadFile(filepath.Join(dir, "own", "cert.der"))
	c2, err := secConnect(t, cfg, secLog())
	if err != nil {
		t.Fatal(err)
	}
	secReadState(t, c2)
	after, _ := os.ReadFile(filepath.Join(dir, "own", "cert.der"))
	if !bytes.Equal(before, after) {
		t.Error("the second connect made a new certificate")
	}
}

func TestConnectUntrustedSimThenTrusted(t *testing.T) {
	srv := secStartSim(t)
	dir := t.TempDir()
	cfg := &Config{Name: "ua1", Endpoint: srv.Endpoint(), PKIDir: dir}
	_, err := secConnect(t, cfg, secLog())
	if !errors.Is(err, ErrServerCertUntrusted) || errors.Is(err, connectors.ErrConfig) {
		t.Fatalf("err = %v, want ErrServerCertUntrusted and no ErrConfig (the Supervisor must keep retrying)", err)
	}
	thumb := sha1Hex(srv.Certificate())
	name := "unsgate sim OPC UA server[" + thumb + "].der"
	rejected := filepath.Join(dir, "rejected", name)
	trusted := filepath.Join(dir, "trusted", name)
	for _, want := range []string{thumb, "unsgate sim OPC UA server", rejected, trusted, srv.Endpoint()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if got, err := os.ReadFile(rejected); err != nil || !bytes.Equal(got, srv.Certificate()) {
		t.Fatalf("rejected certificate file: %v", err)
	}
	// Refused before the secure channel: no identity was needed yet.
	// The user moves the file as the error says; the next connect works.
	if err := os.MkdirAll(filepath.Dir(trusted), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rejected, trusted); err != nil {
		t.Fatal(err)
	}
	c, err := secConnect(t, cfg, secLog())
	if err != nil {
		t.Fatalf("after trusting: %v", err)
	}
	secReadState(t, c)
}

func TestConnectAcceptAnyServerCert(t *testing.T) {
	srv := secStartSim(t)
	dir := t.TempDir()
	rec := &secRecorder{}
	c, err := secConnect(t, &Config{Name: "lab", Endpoint: srv.Endpoint(), PKIDir: dir, AcceptAnyServerCert: true}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	secReadState(t, c)
	line := rec.find("accept_any_server_cert")
	if !strings.HasPrefix(line, "WARN") || !strings.Contains(line, sha1Hex(srv.Certificate())) {
		t.Errorf("warning = %q, want a WARN naming the thumbprint", line)
	}
	if _, err := os.Stat(filepath.Join(dir, "rejected")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rejected/ was written: %v", err)
	}
}

func TestConnectPolicyNoneWithoutPKI(t *testing.T) {
	srv := secStartSim(t)
	cfg := &Config{Name: "lab", Endpoint: srv.Endpoint(), SecurityPolicy: "None", AcceptAnyServerCert: true}
	if probs := CheckSecurity(cfg); len(probs) > 0 {
		t.Fatal(probs)
	}
	c, err := secConnect(t, cfg, secLog())
	if err != nil {
		t.Fatal(err)
	}
	secReadState(t, c)
}

func TestConnectNoFittingEndpoint(t *testing.T) {
	srv := secStartSim(t)
	_, err := secConnect(t, &Config{Name: "ua", Endpoint: srv.Endpoint(), SecurityPolicy: "Basic128Rsa15", AllowInsecurePolicies: true, AcceptAnyServerCert: true}, secLog())
	if err == nil || !strings.Contains(err.Error(), "fits security_policy Basic128Rsa15") || !strings.Contains(err.Error(), "the server offers: ") || !strings.Contains(err.Error(), "Basic256Sha256/SignAndEncrypt (anonymous, user name)") {
		t.Fatalf("err = %v, want the list of offered endpoints", err)
	}
}

func TestConnectUnreachable(t *testing.T) {
	addr := closedAddr(t)
	start := time.Now()
	_, err := secConnect(t, &Config{Endpoint: "opc.tcp://" + addr, PKIDir: t.TempDir(), Timeout: 2 * time.Second}, secLog())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want one naming %s", err, addr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v to fail", d)
	}
}

// A server that accepts the TCP connection and never answers: the connect
// ends after the timeout with an error saying so.
func TestConnectSilentServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	start := time.Now()
	_, err = secConnect(t, &Config{Endpoint: "opc.tcp://" + ln.Addr().String(), PKIDir: t.TempDir(), Timeout: 300 * time.Millisecond}, secLog())
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestConnectErrorMessages(t *testing.T) {
	id := &identity{certFile: "/data/pki/own/cert.der", thumbprint: "0123abcd"}
	endpoint := secEP("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt, 1)
	cfg := &Config{Endpoint: "opc.tcp://plc:4840", Username: "operator"}
	for _, tc := range []struct {
		err    error
		id     *identity
		tok    ua.UserTokenType
		is     error
		naming []string
	}{
		{ua.StatusBadSecurityChecksFailed, id, ua.UserTokenTypeUserName, ErrGatewayCertRejected, []string{"/data/pki/own/cert.der", "0123abcd", "BadSecurityChecksFailed", "administrator", "opc.tcp://plc:4840"}},
		{fmt.Errorf("wrapped: %w", ua.StatusBadCertificateUntrusted), id, ua.UserTokenTypeAnonymous, ErrGatewayCertRejected, []string{"BadCertificateUntrusted"}},
		{ua.StatusBadCertificateURIInvalid, id, ua.UserTokenTypeAnonymous, ErrGatewayCertRejected, []string{"BadCertificateURIInvalid"}},
		{ua.StatusBadUserAccessDenied, id, ua.UserTokenTypeUserName, ErrUserRejected, []string{`user "operator"`, "BadUserAccessDenied", "password"}},
		{ua.StatusBadIdentityTokenRejected, id, ua.UserTokenTypeAnonymous, ErrUserRejected, []string{"anonymous login", "BadIdentityTokenRejected"}},
		{ua.StatusBadIdentityTokenInvalid, nil, ua.UserTokenTypeUserName, ErrUserRejected, []string{"BadIdentityTokenInvalid"}},
	} {
		err := connectError(context.Background(), cfg, endpoint, tc.id, tc.tok, tc.err, time.Second)
		if !errors.Is(err, tc.is) || !errors.Is(err, tc.err) {
			t.Errorf("%v: err = %v, want %v wrapping the status", tc.err, err, tc.is)
		}
		for _, s := range tc.naming {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%v: %q does not name %q", tc.err, err, s)
			}
		}
	}
	// Without a certificate sent, a certificate status is not blamed on it.
	if err := connectError(context.Background(), cfg, endpoint, nil, ua.UserTokenTypeAnonymous, ua.StatusBadSecurityChecksFailed, time.Second); errors.Is(err, ErrGatewayCertRejected) {
		t.Errorf("no certificate was sent, yet %v", err)
	}
}

// serviceFaultERR builds the ERR message node-opcua 2.16x sends when it
// refuses a client certificate: an unencrypted OpenSecureChannel-like
// message carrying a ServiceFault.
func serviceFaultERR(t *testing.T, code ua.StatusCode, serverCert []byte) []byte {
	t.Helper()
	typeID, err := ua.NewFourByteExpandedNodeID(0, id.ServiceFault_Encoding_DefaultBinary).Encode()
	if err != nil {
		t.Fatal(err)
	}
	fault, err := ua.Encode(&ua.ServiceFault{ResponseHeader: &ua.ResponseHeader{
		Timestamp: time.Now(), RequestHandle: 1, ServiceResult: code,
		ServiceDiagnostics: &ua.DiagnosticInfo{}, AdditionalHeader: ua.NewExtensionObject(nil),
	}})
	if err != nil {
		t.Fatal(err)
	}
	b := ua.NewBuffer(nil)
	b.WriteUint32(9) // secure channel id
	b.WriteByteString([]byte(ua.SecurityPolicyURIBasic256Sha256))
	b.WriteByteString(serverCert)
	b.WriteByteString(make([]byte, 20))
	b.WriteUint32(1) // sequence number
	b.WriteUint32(1) // request id
	b.Write(typeID)
	b.Write(fault)
	return b.Bytes()
}

func TestErrMessageCode(t *testing.T) {
	std := ua.NewBuffer(nil)
	std.WriteUint32(uint32(ua.StatusBadCertificateUntrusted))
	std.WriteString("untrusted")
	for name, tc := range map[string]struct {
		body []byte
		want uint32
		ok   bool
	}{
		"standard":     {std.Bytes(), uint32(ua.StatusBadCertificateUntrusted), true},
		"no reason":    {[]byte{0, 0, 0x13, 0x80, 0xff, 0xff, 0xff, 0xff}, uint32(ua.StatusBadSecurityChecksFailed), true},
		"node-opcua":   {serviceFaultERR(t, ua.StatusBadSecurityChecksFailed, []byte("cert")), uint32(ua.StatusBadSecurityChecksFailed), true},
		"truncated":    {serviceFaultERR(t, ua.StatusBadSecurityChecksFailed, []byte("cert"))[:40], 0, false},
		"empty":        {nil, 0, false},
		"good service": {serviceFaultERR(t, ua.StatusOK, nil), 0, false},
	} {
		got, ok := errMessageCode(tc.body)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %#x %v, want %#x %v", name, got, ok, tc.want, tc.ok)
		}
	}
}

// errMessageCode reads what a server sends before any security is set up,
// so hostile bytes must neither panic nor make it allocate by a length the
// message claims (the gateway process would die of it).
func FuzzErrMessageCode(f *testing.F) {
	std := ua.NewBuffer(nil)
	std.WriteUint32(uint32(ua.StatusBadCertificateUntrusted))
	std.WriteString("untrusted")
	f.Add(std.Bytes())
	f.Add(serviceFaultERR(&testing.T{}, ua.StatusBadSecurityChecksFailed, []byte("cert")))
	// A ServiceFault whose diagnostics claim a 2^31-element string table.
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x8d\x01\xa7p8\x04Y{\xdd\x01\x01\x00\x00\x00\x00\x00\x13\x80\x00\xff\x00\x7f\x7f"))
	f.Fuzz(func(t *testing.T, body []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		errMessageCode(body)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20+uint64(len(body))*4 {
			t.Fatalf("allocated %d bytes for a %d-byte message", n, len(body))
		}
	})
}

// A server that refuses the OpenSecureChannel with an ERR message and
// hangs up: gopcua reports only EOF, the probe finds the status code.
func TestProbeChannelReadsERR(t *testing.T) {
	id, err := loadIdentity(&Config{Name: "probe", PKIDir: t.TempDir()}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	// Basic256Sha256 needs a 2048-bit server key: borrow an identity's.
	srvID, err := loadIdentity(&Config{Name: "refusing-server", PKIDir: t.TempDir()}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	serverCert := srvID.cert
	endpoint := secEP("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt, 1)
	endpoint.ServerCertificate = serverCert

	for name, refuse := range map[string]func(c *uacp.Conn){
		"standard ERR": func(c *uacp.Conn) { c.SendError(ua.StatusBadCertificateUntrusted) },
		"node-opcua ERR": func(c *uacp.Conn) {
			body := serviceFaultERR(t, ua.StatusBadCertificateUntrusted, serverCert)
			hdr := []byte{'E', 'R', 'R', 'F', 0, 0, 0, 0}
			binary.LittleEndian.PutUint32(hdr[4:], uint32(8+len(body)))
			c.TCPConn.Write(append(hdr, body...))
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ln, err := uacp.Listen(ctx, "opc.tcp://127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			url := "opc.tcp://" + ln.Addr().String()
			served := make(chan error, 2)
			go func() { // refuses every channel until the listener closes
				for {
					c, err := ln.Accept(ctx)
					if err != nil {
						return
					}
					_, err = c.Receive() // the OpenSecureChannel request
					if err == nil {
						refuse(c)
					}
					c.Close()
					select {
					case served <- err:
					default:
					}
				}
			}()
			code, ok := probeChannel(ctx, url, endpoint, id, 5*time.Second)
			if err := <-served; err != nil {
				t.Fatalf("server: %v", err)
			}
			if !ok || code != ua.StatusBadCertificateUntrusted {
				t.Fatalf("probe = %v %v, want BadCertificateUntrusted", code, ok)
			}
			// The error connect returns then names the gateway's certificate.
			err = connectError(ctx, &Config{Endpoint: url}, endpoint, id, ua.UserTokenTypeAnonymous, io.EOF, 5*time.Second)
			if !errors.Is(err, ErrGatewayCertRejected) || !strings.Contains(err.Error(), id.certFile) || !strings.Contains(err.Error(), id.thumbprint) {
				t.Fatalf("connect error = %v", err)
			}
		})
	}
}

// The probe's loopback relay serves only the probe's own connection: another
// local process that connects first must neither be relayed to the server
// nor decide the status code the gateway reports.
func TestRelayERROnlyRelaysTheProbe(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() { // answers "OURS" and anything else with different ERR codes
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				hello := make([]byte, 4)
				if _, err := io.ReadFull(c, hello); err != nil {
					return
				}
				code := ua.StatusBadUserAccessDenied
				if string(hello) == "OURS" {
					code = ua.StatusBadCertificateUntrusted
				}
				msg := []byte{'E', 'R', 'R', 'F', 16, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}
				binary.LittleEndian.PutUint32(msg[8:], uint32(code))
				c.Write(msg)
			}()
		}
	}()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stranger, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.Write([]byte("EVIL"))
	ours, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var code atomic.Uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		relayERR(ctx, ln, ours.LocalAddr().String(), srv.Addr().String(), 2*time.Second, &code)
	}()
	ours.Write([]byte("OURS"))
	ours.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, 16)
	if _, err := io.ReadFull(ours, got); err != nil || string(got[:3]) != "ERR" {
		t.Fatalf("the probe's connection got %q, %v; want the server's ERR", got, err)
	}
	cancel()
	<-done
	if c := ua.StatusCode(code.Load()); c != ua.StatusBadCertificateUntrusted {
		t.Fatalf("code = %v, want the one the server sent the probe", c)
	}
}
