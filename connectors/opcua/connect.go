package opcua

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"
	"github.com/gopcua/opcua/uapolicy"
	"github.com/gopcua/opcua/uasc"

	"github.com/unsgate/unsgate/connectors"
)

// secPolicy is a security policy the gateway knows.
type secPolicy struct {
	name string
	uri  string
	// rank orders secPolicies by strength for the automatic choice.
	rank int
	// insecure secPolicies (deprecated by OPC UA, broken by current attacks)
	// need AllowInsecurePolicies.
	insecure bool
}

var secPolicies = []secPolicy{
	{"None", ua.SecurityPolicyURINone, 0, false},
	{"Basic128Rsa15", ua.SecurityPolicyURIBasic128Rsa15, 1, true},
	{"Basic256", ua.SecurityPolicyURIBasic256, 2, true},
	{"Basic256Sha256", ua.SecurityPolicyURIBasic256Sha256, 3, false},
	{"Aes128_Sha256_RsaOaep", ua.SecurityPolicyURIAes128Sha256RsaOaep, 4, false},
	{"Aes256_Sha256_RsaPss", ua.SecurityPolicyURIAes256Sha256RsaPss, 5, false},
}

const securePolicyNames = "None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss"

// lookupSecPolicy finds a policy by config name (case and underscores do not
// matter, so gopcua's Aes128Sha256RsaOaep works too) or by URI.
func lookupSecPolicy(s string) (secPolicy, bool) {
	norm := func(s string) string {
		s = strings.TrimPrefix(s, ua.SecurityPolicyURIPrefix)
		return strings.ToLower(strings.ReplaceAll(s, "_", ""))
	}
	for _, p := range secPolicies {
		if norm(p.name) == norm(s) {
			return p, true
		}
	}
	return secPolicy{}, false
}

func secPolicyByURI(uri string) (secPolicy, bool) {
	for _, p := range secPolicies {
		if p.uri == uri {
			return p, true
		}
	}
	return secPolicy{}, false
}

// parseSecurityMode maps a config word to a mode; "" is Invalid (choose).
func parseSecurityMode(s string) (ua.MessageSecurityMode, bool) {
	switch strings.ToLower(s) {
	case "":
		return ua.MessageSecurityModeInvalid, true
	case "none":
		return ua.MessageSecurityModeNone, true
	case "sign":
		return ua.MessageSecurityModeSign, true
	case "signandencrypt":
		return ua.MessageSecurityModeSignAndEncrypt, true
	}
	return ua.MessageSecurityModeInvalid, false
}

func secModeName(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return "None"
	case ua.MessageSecurityModeSign:
		return "Sign"
	case ua.MessageSecurityModeSignAndEncrypt:
		return "SignAndEncrypt"
	}
	return fmt.Sprintf("mode %d", m)
}

func secModeRank(m ua.MessageSecurityMode) int {
	switch m {
	case ua.MessageSecurityModeSign:
		return 1
	case ua.MessageSecurityModeSignAndEncrypt:
		return 2
	}
	return 0
}

// securityNone reports whether cfg asks for no security (policy None, or no
// policy with mode None).
func securityNone(cfg *Config) bool {
	if p, ok := lookupSecPolicy(cfg.SecurityPolicy); ok && cfg.SecurityPolicy != "" {
		return p.uri == ua.SecurityPolicyURINone
	}
	m, ok := parseSecurityMode(cfg.SecurityMode)
	return cfg.SecurityPolicy == "" && ok && m == ua.MessageSecurityModeNone
}

// checkSecurity appends every security and identity problem of cfg to
// probs, one sentence each, naming the keys as the gateway config spells
// them.
func checkSecurity(cfg *Config, probs *[]string) {
	add := func(format string, args ...any) { *probs = append(*probs, fmt.Sprintf(format, args...)) }

	pol, polOK := lookupSecPolicy(cfg.SecurityPolicy)
	switch {
	case cfg.SecurityPolicy == "":
		polOK = false
	case !polOK:
		add("security_policy %q is not known; use %s, or leave it out for the most secure policy the server offers", cfg.SecurityPolicy, securePolicyNames)
	case pol.insecure && !cfg.AllowInsecurePolicies:
		add("security_policy %s is deprecated and insecure (OPC UA withdrew it; its algorithms are broken); use Basic256Sha256 or newer, or set allow_insecure_policies: true to use it anyway", pol.name)
	}
	mode, modeOK := parseSecurityMode(cfg.SecurityMode)
	if !modeOK {
		add("security_mode %q is not known; use None, Sign or SignAndEncrypt, or leave it out for the strongest the server offers", cfg.SecurityMode)
	}
	if polOK && modeOK && mode != ua.MessageSecurityModeInvalid {
		switch {
		case pol.uri == ua.SecurityPolicyURINone && mode != ua.MessageSecurityModeNone:
			add("security_mode %s needs a security policy that signs, such as Basic256Sha256; security_policy None only goes with security_mode None", secModeName(mode))
		case pol.uri != ua.SecurityPolicyURINone && mode == ua.MessageSecurityModeNone:
			add("security_mode None only goes with security_policy None; security_policy %s needs security_mode Sign or SignAndEncrypt", pol.name)
		}
	}

	if cfg.Password != "" && cfg.Username == "" {
		add("password is set but username is not; set username too (or remove password to log in anonymously)")
	}
	switch {
	case cfg.CertFile != "" && cfg.KeyFile == "":
		add("cert_file is set but key_file is not; set both, or neither to let the gateway create its own certificate in pki_dir")
	case cfg.KeyFile != "" && cfg.CertFile == "":
		add("key_file is set but cert_file is not; set both, or neither to let the gateway create its own certificate in pki_dir")
	}
	if cfg.PKIDir == "" {
		none := securityNone(cfg)
		ownCert := cfg.CertFile == "" && cfg.KeyFile == "" && !none
		switch {
		case ownCert && !cfg.AcceptAnyServerCert:
			add("pki_dir is required: the gateway keeps its own certificate there (unless cert_file and key_file are set) and trusts the server certificates in its trusted folder (unless accept_any_server_cert is set)")
		case ownCert:
			add("pki_dir is required for a secured connection: the gateway creates its own certificate there; set it, or set cert_file and key_file")
		case !cfg.AcceptAnyServerCert:
			add("pki_dir is required: the gateway trusts only the server certificates in its trusted folder; set it, or set accept_any_server_cert: true (lab use only)")
		}
	}
	if cfg.ApplicationURI != "" {
		if u, err := url.Parse(cfg.ApplicationURI); err != nil || u.Scheme == "" {
			add("application_uri %q is not a URI; write it like urn:unsgate:HOST:NAME", cfg.ApplicationURI)
		}
	}
}

// tokenName names a user token type for messages.
func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeAnonymous:
		return "anonymous"
	case ua.UserTokenTypeUserName:
		return "user name"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	case ua.UserTokenTypeIssuedToken:
		return "issued token"
	}
	return fmt.Sprintf("token type %d", t)
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	if len(ep.UserIdentityTokens) == 0 {
		// No secPolicies listed: servers that do this take anonymous sessions.
		return t == ua.UserTokenTypeAnonymous
	}
	return slices.ContainsFunc(ep.UserIdentityTokens, func(p *ua.UserTokenPolicy) bool { return p.TokenType == t })
}

const binaryTransport = "http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary"

// chooseEndpoint picks the endpoint to connect to: the configured policy
// and mode when set, else the most secure allowed one (policy strength,
// then mode, then the server's SecurityLevel). Insecure secPolicies only with
// AllowInsecurePolicies; None only when configured or when the server
// offers nothing else that fits. The endpoint must take the login's token
// type.
func chooseEndpoint(eps []*ua.EndpointDescription, cfg *Config) (*ua.EndpointDescription, error) {
	want, _ := parseSecurityMode(cfg.SecurityMode)
	var wantPol secPolicy
	if cfg.SecurityPolicy != "" {
		wantPol, _ = lookupSecPolicy(cfg.SecurityPolicy)
	}
	tok := ua.UserTokenTypeAnonymous
	if cfg.Username != "" {
		tok = ua.UserTokenTypeUserName
	}
	var fits []*ua.EndpointDescription
	for _, ep := range eps {
		p, known := secPolicyByURI(ep.SecurityPolicyURI)
		switch {
		case ep.TransportProfileURI != "" && ep.TransportProfileURI != binaryTransport,
			!known,
			p.insecure && !cfg.AllowInsecurePolicies,
			cfg.SecurityPolicy != "" && p.uri != wantPol.uri,
			want != ua.MessageSecurityModeInvalid && ep.SecurityMode != want,
			secModeRank(ep.SecurityMode) == 0 && ep.SecurityMode != ua.MessageSecurityModeNone,
			!offersToken(ep, tok):
			continue
		}
		fits = append(fits, ep)
	}
	if len(fits) == 0 {
		return nil, noEndpointError(eps, cfg, tok)
	}
	rank := func(ep *ua.EndpointDescription) (int, int, int) {
		p, _ := secPolicyByURI(ep.SecurityPolicyURI)
		return p.rank, secModeRank(ep.SecurityMode), int(ep.SecurityLevel)
	}
	return slices.MaxFunc(fits, func(a, b *ua.EndpointDescription) int {
		ap, am, al := rank(a)
		bp, bm, bl := rank(b)
		return cmp.Or(cmp.Compare(ap, bp), cmp.Compare(am, bm), cmp.Compare(al, bl))
	}), nil
}

func noEndpointError(eps []*ua.EndpointDescription, cfg *Config, tok ua.UserTokenType) error {
	var want []string
	if cfg.SecurityPolicy != "" {
		want = append(want, "security_policy "+cfg.SecurityPolicy)
	}
	if cfg.SecurityMode != "" {
		want = append(want, "security_mode "+cfg.SecurityMode)
	}
	want = append(want, tokenName(tok)+" login")
	if !cfg.AllowInsecurePolicies {
		want = append(want, "no deprecated policy (allow_insecure_policies is off)")
	}
	return fmt.Errorf("no endpoint of the server fits %s; the server offers: %s", strings.Join(want, ", "), describeEndpoints(eps))
}

// describeEndpoints lists endpoints as "Basic256Sha256/SignAndEncrypt
// (user name, anonymous)".
func describeEndpoints(eps []*ua.EndpointDescription) string {
	if len(eps) == 0 {
		return "no endpoints"
	}
	var out []string
	for _, ep := range eps {
		name := strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix)
		var toks []string
		for _, t := range ep.UserIdentityTokens {
			if n := tokenName(t.TokenType); !slices.Contains(toks, n) {
				toks = append(toks, n)
			}
		}
		s := name + "/" + secModeName(ep.SecurityMode) + " (" + strings.Join(toks, ", ") + ")"
		if ep.TransportProfileURI != "" && ep.TransportProfileURI != binaryTransport {
			s += " over " + ep.TransportProfileURI
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}

// connect opens a secure channel and an activated session to cfg.Endpoint
// with cfg's security and authentication. cfg has its defaults applied
// (Timeout, SessionTimeout). onState, when not nil, is told about every
// connection state change of the client (gopcua's own reconnect is off: a
// lost connection ends the session and the Supervisor starts a new one).
// The caller closes the client.
//
// Steps: the endpoints over the unsecured discovery channel, the choice of
// endpoint, the server certificate against PKIDir/trusted, the gateway's
// identity (created on first use), then channel and session. Each network
// step is bounded by cfg.Timeout. Errors say what to do: an untrusted server
// certificate (ErrServerCertUntrusted; the file to move), the server
// refusing the gateway's certificate (ErrGatewayCertRejected; the file to
// hand over), a refused login (ErrUserRejected), no fitting endpoint (what
// the server offers). Only a broken configured certificate or key wraps
// connectors.ErrConfig; the rest may be fixed on the other side, so the
// Supervisor keeps retrying.
func connect(ctx context.Context, cfg *Config, log *slog.Logger, onState func(opcua.ConnState)) (*opcua.Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cmp.Or(cfg.Timeout, DefaultTimeout)

	gctx, cancel := context.WithTimeout(ctx, timeout)
	eps, err := opcua.GetEndpoints(gctx, cfg.Endpoint, opcua.DialTimeout(timeout), opcua.RequestTimeout(timeout))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("get endpoints of %s: %w", cfg.Endpoint, explainNetErr(err, timeout))
	}
	ep, err := chooseEndpoint(eps, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Endpoint, err)
	}
	secured := ep.SecurityMode != ua.MessageSecurityModeNone
	pol, _ := secPolicyByURI(ep.SecurityPolicyURI)
	log.Debug("opcua: chose endpoint", "source", cfg.Name, "endpoint", cfg.Endpoint, "policy", pol.name, "mode", secModeName(ep.SecurityMode))

	switch {
	case cfg.AcceptAnyServerCert:
		log.Warn("opcua: accepting the server's certificate without checking it (accept_any_server_cert is set; lab use only)",
			"source", cfg.Name, "endpoint", cfg.Endpoint, "thumbprint", certThumbprint(ep.ServerCertificate))
	case len(ep.ServerCertificate) > 0 && cfg.PKIDir == "":
		return nil, fmt.Errorf("%s: %w: pki_dir is required to check the server's certificate (or set accept_any_server_cert: true, lab use only)", cfg.Endpoint, connectors.ErrConfig)
	case len(ep.ServerCertificate) > 0:
		if err := checkServerCert(cfg.PKIDir, ep.ServerCertificate, time.Now(), log); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Endpoint, err)
		}
	case secured:
		return nil, fmt.Errorf("%s: %w: the endpoint %s/%s sent no certificate", cfg.Endpoint, ErrServerCertUntrusted, pol.name, secModeName(ep.SecurityMode))
	}

	tok := ua.UserTokenTypeAnonymous
	if cfg.Username != "" {
		tok = ua.UserTokenTypeUserName
		if !secured && tokenPolicyURI(ep, tok) == ua.SecurityPolicyURINone {
			log.Warn("opcua: the password goes to the server unencrypted (security policy None and the server's user token policy is None)",
				"source", cfg.Name, "endpoint", cfg.Endpoint, "username", cfg.Username)
		}
	}

	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.RequestTimeout(timeout),
		opcua.DialTimeout(timeout),
		opcua.SessionTimeout(cmp.Or(cfg.SessionTimeout, DefaultSessionTimeout)),
		opcua.ApplicationName("unsgate"),
		opcua.ProductURI("urn:unsgate"),
		opcua.ApplicationURI(defaultApplicationURI(cfg)),
		opcua.SessionName("unsgate " + cfg.Name),
	}
	var id *identity
	if secured {
		if id, err = loadIdentity(cfg, log); err != nil {
			return nil, err
		}
		// Certificate also sets the session's application URI to the
		// certificate's, which servers compare.
		opts = append(opts, opcua.Certificate(id.cert), opcua.PrivateKey(id.key))
	}
	if tok == ua.UserTokenTypeUserName {
		opts = append(opts, opcua.AuthUsername(cfg.Username, cfg.Password))
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tok))
	if onState != nil {
		opts = append(opts, opcua.StateChangedFunc(onState))
	}

	// Dial the configured address, not the endpoint's URL: servers often
	// advertise a host name the gateway cannot resolve.
	c, err := opcua.NewClient(cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: client options: %w", cfg.Endpoint, err)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err = connectClient(cctx, c)
	cancel()
	if err != nil {
		closeQuietly(c, timeout)
		return nil, connectError(ctx, cfg, ep, id, tok, err, timeout)
	}
	return c, nil
}

// connectClient runs c.Connect, turning a panic into an error: gopcua
// v0.9.0 dereferences a nil session when the server's CreateSession
// signature does not verify, and a broken server must not take the gateway
// down.
func connectClient(ctx context.Context, c *opcua.Client) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the session could not be set up (did the server's signature fail to verify?): %v", p)
		}
	}()
	return c.Connect(ctx)
}

func closeQuietly(c *opcua.Client, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = c.Close(ctx) // the connect error is what matters
}

func certThumbprint(der []byte) string {
	if len(der) == 0 {
		return "none"
	}
	return sha1Hex(leafDER(der))
}

// leafDER is the first certificate of a DER chain.
func leafDER(der []byte) []byte {
	if cs, err := x509.ParseCertificates(der); err == nil && len(cs) > 0 {
		return cs[0].Raw
	}
	return der
}

// tokenPolicyURI is the security policy that protects the token of type t
// on ep (the endpoint's when the token names none).
func tokenPolicyURI(ep *ua.EndpointDescription, t ua.UserTokenType) string {
	for _, p := range ep.UserIdentityTokens {
		if p.TokenType == t {
			return cmp.Or(p.SecurityPolicyURI, ep.SecurityPolicyURI)
		}
	}
	return ep.SecurityPolicyURI
}

// Status codes by which a server refuses the client's certificate.
var certRejections = []ua.StatusCode{
	ua.StatusBadSecurityChecksFailed,
	ua.StatusBadCertificateInvalid,
	ua.StatusBadCertificateUntrusted,
	ua.StatusBadCertificateTimeInvalid,
	ua.StatusBadCertificateIssuerTimeInvalid,
	ua.StatusBadCertificateHostNameInvalid,
	ua.StatusBadCertificateURIInvalid,
	ua.StatusBadCertificateUseNotAllowed,
	ua.StatusBadCertificateIssuerUseNotAllowed,
	ua.StatusBadCertificateRevocationUnknown,
	ua.StatusBadCertificateIssuerRevocationUnknown,
	ua.StatusBadCertificateRevoked,
	ua.StatusBadCertificateIssuerRevoked,
	ua.StatusBadCertificateChainIncomplete,
	ua.StatusBadCertificatePolicyCheckFailed,
	ua.StatusBadNoValidCertificates,
	ua.StatusBadApplicationSignatureInvalid,
}

// Status codes by which a server refuses the login.
var loginRejections = []ua.StatusCode{
	ua.StatusBadUserAccessDenied,
	ua.StatusBadIdentityTokenInvalid,
	ua.StatusBadIdentityTokenRejected,
	ua.StatusBadUserSignatureInvalid,
}

func statusIn(err error, codes []ua.StatusCode) (ua.StatusCode, bool) {
	var sc ua.StatusCode
	if !errors.As(err, &sc) {
		return 0, false
	}
	return sc, slices.Contains(codes, sc)
}

// connectError turns a failed Connect into an error that says what to do.
func connectError(ctx context.Context, cfg *Config, ep *ua.EndpointDescription, id *identity, tok ua.UserTokenType, err error, timeout time.Duration) error {
	pol, _ := secPolicyByURI(ep.SecurityPolicyURI)
	where := fmt.Sprintf("connect to %s (%s/%s)", cfg.Endpoint, pol.name, secModeName(ep.SecurityMode))

	// Servers that refuse the certificate while opening the channel may send
	// a transport error and hang up; gopcua's client then reports only the
	// closed connection. Ask once more with a bare secure channel that keeps
	// the server's error.
	if id != nil && errors.Is(err, io.EOF) && ctx.Err() == nil {
		if code, ok := probeChannel(ctx, cfg.Endpoint, ep, id, timeout); ok {
			err = fmt.Errorf("%w (the server closed the channel: %w)", code, err)
		}
	}

	if sc, ok := statusIn(err, certRejections); ok && id != nil {
		return fmt.Errorf("%s: %w (%s): give the gateway's certificate %s (SHA-1 thumbprint %s) to the server's administrator to trust it, e.g. move it from the server's rejected certificates to its trusted ones: %w",
			where, ErrGatewayCertRejected, uaCodeName(sc), id.certFile, id.thumbprint, err)
	}
	if sc, ok := statusIn(err, loginRejections); ok {
		who := "anonymous login"
		if tok == ua.UserTokenTypeUserName {
			who = fmt.Sprintf("user %q", cfg.Username)
		}
		return fmt.Errorf("%s: %w: %s was refused (%s): check username and password, and that the user may log in: %w",
			where, ErrUserRejected, who, uaCodeName(sc), err)
	}
	return fmt.Errorf("%s: %w", where, explainNetErr(err, timeout))
}

// uaCodeName is a status code's symbolic name (BadUserAccessDenied).
func uaCodeName(sc ua.StatusCode) string {
	if d, ok := ua.StatusCodes[sc]; ok {
		return strings.TrimPrefix(d.Name, "Status")
	}
	return fmt.Sprintf("0x%08X", uint32(sc))
}

// explainNetErr adds the likely cause to errors that say little.
func explainNetErr(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ua.StatusBadTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no answer within %v (timeout): %w", timeout, err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("the server closed the connection: %w", err)
	}
	return err
}

// probeChannel opens a bare secure channel to endpoint with ep's security
// and the gateway's identity, and returns the status code of the transport
// error (ERR message) the server refused it with, if it did. gopcua turns
// an ERR message into a plain EOF, so the channel runs through a loopback
// relay that watches the server's messages.
func probeChannel(ctx context.Context, endpoint string, ep *ua.EndpointDescription, id *identity, timeout time.Duration) (ua.StatusCode, bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, u, err := uacp.ResolveEndpoint(ctx, endpoint)
	if err != nil {
		return 0, false
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, false
	}
	defer ln.Close()
	// Dial before the relay accepts, so it knows which connection is ours.
	tcp, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return 0, false
	}
	var code atomic.Uint32
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		relayERR(ctx, ln, tcp.LocalAddr().String(), u.Host, timeout, &code)
	}()
	defer func() { cancel(); <-relayed }()

	conn, err := uacp.NewConn(tcp, uacp.DefaultClientACK)
	if err != nil {
		tcp.Close()
		return 0, false
	}
	defer conn.Close()
	if err := conn.Handshake(ctx, endpoint); err != nil {
		return asStatus(err)
	}
	sc, err := uasc.NewSecureChannel(endpoint, conn, &uasc.Config{
		SecurityPolicyURI: ep.SecurityPolicyURI,
		SecurityMode:      ep.SecurityMode,
		Certificate:       id.cert,
		LocalKey:          id.key,
		RemoteCertificate: ep.ServerCertificate,
		Thumbprint:        uapolicy.Thumbprint(ep.ServerCertificate),
		RequestTimeout:    timeout,
		Lifetime:          uint32(time.Minute / time.Millisecond),
	}, make(chan error, 8))
	if err != nil {
		return 0, false
	}
	err = sc.Open(ctx)
	sc.Close()
	if err == nil {
		return 0, false
	}
	conn.Close()
	cancel()
	<-relayed
	if c := code.Load(); c != 0 {
		return ua.StatusCode(c), true
	}
	return asStatus(err)
}

// relayERR forwards the connection from want (the probe's local address)
// accepted on ln to addr and both ways back, and stores the status code of
// the first ERR message the server sends in code. Other local processes may
// connect to ln too: they are hung up on.
func relayERR(ctx context.Context, ln *net.TCPListener, want, addr string, timeout time.Duration, code *atomic.Uint32) {
	ln.SetDeadline(time.Now().Add(timeout))
	var client net.Conn
	for client == nil {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if c.RemoteAddr().String() == want {
			client = c
		} else {
			c.Close()
		}
	}
	defer client.Close()
	server, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer server.Close()
	stop := context.AfterFunc(ctx, func() { client.Close(); server.Close() })
	defer stop()
	go func() {
		io.Copy(server, client)
		server.Close()
	}()
	// OPC UA TCP messages: 3 bytes type, 1 byte chunk type, 4 bytes size
	// (little endian, header included). An ERR body starts with the code.
	hdr := make([]byte, 8)
	for {
		if _, err := io.ReadFull(server, hdr); err != nil {
			return
		}
		size := binary.LittleEndian.Uint32(hdr[4:])
		if size < 8 || size > 1<<24 {
			return
		}
		body := make([]byte, size-8)
		if _, err := io.ReadFull(server, body); err != nil {
			return
		}
		if string(hdr[:3]) == "ERR" {
			if c, ok := errMessageCode(body); ok {
				code.CompareAndSwap(0, c)
			}
		}
		if _, err := client.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

// errMessageCode reads the status code of an ERR message's body: the
// Error (UInt32) and Reason (String) of the standard, or the ServiceFault
// some servers (node-opcua 2.16x) send in an ERR message laid out like an
// unencrypted OpenSecureChannel message (channel id, asymmetric security
// header, sequence header, fault).
func errMessageCode(body []byte) (uint32, bool) {
	if len(body) >= 8 {
		n := int32(binary.LittleEndian.Uint32(body[4:8]))
		if n == -1 && len(body) == 8 || n >= 0 && 8+int(n) == len(body) {
			return binary.LittleEndian.Uint32(body), true
		}
	}
	buf := ua.NewBuffer(body)
	buf.ReadUint32() // secure channel id
	buf.ReadBytes()  // security policy URI
	buf.ReadBytes()  // sender certificate
	buf.ReadBytes()  // receiver certificate thumbprint
	buf.ReadUint32() // sequence number
	buf.ReadUint32() // request id
	// Read the fault by hand rather than with ua.DecodeService: these bytes
	// come before any security, and gopcua's decoder allocates whatever
	// array lengths a message claims (a few bytes can exhaust the memory).
	// The type id, then the ResponseHeader's Timestamp, RequestHandle and
	// ServiceResult.
	var typeID uint32
	switch buf.ReadByte() {
	case 0x01: // four-byte node id
		if buf.ReadByte() == 0 {
			typeID = uint32(buf.ReadUint16())
		}
	case 0x02: // numeric node id
		if buf.ReadUint16() == 0 {
			typeID = buf.ReadUint32()
		}
	}
	buf.ReadUint64() // timestamp
	buf.ReadUint32() // request handle
	result := ua.StatusCode(buf.ReadUint32())
	if buf.Error() != nil || typeID != id.ServiceFault_Encoding_DefaultBinary || result == ua.StatusOK {
		return 0, false
	}
	return uint32(result), true
}

func asStatus(err error) (ua.StatusCode, bool) {
	var sc ua.StatusCode
	if errors.As(err, &sc) && sc != ua.StatusOK {
		return sc, true
	}
	return 0, false
}
