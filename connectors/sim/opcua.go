package sim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"
)

// OPCUAOptions configures StartOPCUA.
type OPCUAOptions struct {
	// Addr is host:port (an IPv4 address or a host name; it is also the host
	// of the endpoint URL); "" or port 0 = 127.0.0.1 and a free port. The
	// port stays the same across Stop and Start.
	Addr string
	// NamespaceURI is the sim namespace; default DefaultNamespaceURI.
	NamespaceURI string
	// ExtraNamespaces are registered before NamespaceURI, shifting its index.
	ExtraNamespaces []string
	// Secure also offers the policies in SecurePolicies in modes Sign and
	// SignAndEncrypt, with a generated server certificate that stays the same
	// for the server's life, across Stop and Start.
	Secure bool
	// NoNone does not offer SecurityPolicy None (only with Secure).
	NoNone bool
	// UserName advertises user-name tokens (only with Secure: gopcua's server
	// never offers a user-name token over policy None). gopcua's server
	// accepts any user name and password.
	UserName bool
	// Logger receives the OPC UA library's messages at debug level. Nil
	// discards them.
	Logger *slog.Logger
}

// DefaultNamespaceURI is the sim namespace unless OPCUAOptions says otherwise.
const DefaultNamespaceURI = "urn:unsgate:sim"

// ServerApplicationURI is the application URI in the sim server's
// certificate and application description.
const ServerApplicationURI = "urn:unsgate:sim:opcua-server"

// SecurePolicies are the security policies a Secure server offers, each in
// Sign and SignAndEncrypt. All three work end to end with gopcua v0.9.0 (the
// tests connect with each).
var SecurePolicies = []string{
	ua.SecurityPolicyURIBasic256Sha256,
	ua.SecurityPolicyURIAes128Sha256RsaOaep,
	ua.SecurityPolicyURIAes256Sha256RsaPss,
}

// OPCUAServer is an OPC UA server for tests and the demo, built on gopcua's
// server package: folders and variables in one namespace, values set by the
// test (the server never samples on its own), Stop and Start to simulate a
// server restart, and renumbering of namespaces and node ids.
//
// Clients connect to a small TCP relay in front of gopcua's listener: gopcua's
// Close does not close client connections (it sends CloseSecureChannel, which
// gopcua's client ignores), so Stop closes them at the relay and every client
// sees the connection drop, as with a real server restart. The relay also
// refuses an OpenSecureChannel with a security policy that is not offered,
// which gopcua's server would accept.
//
// All methods are safe for concurrent use, also while clients are served.
// Misuse that is a bug in the test (unknown path, unsupported value type,
// duplicate node id) panics.
type OPCUAServer struct {
	opts     OPCUAOptions
	log      *slog.Logger
	host     string
	port     int
	endpoint string
	cert     []byte
	key      *rsa.PrivateKey

	life   sync.Mutex // serializes Start, Stop and Close
	closed bool

	run atomic.Pointer[uaRun] // nil while stopped

	// subMu serializes CreateSubscription; subTop is the highest
	// subscription id ever handed out, over every Start (see
	// registerHandlers).
	subMu  sync.Mutex
	subTop uint32

	mu     sync.RWMutex
	nsIdx  uint16
	extras []string
	byPath map[string]*uaNode
	byID   map[string]*uaNode       // by local id: the node id text without ns=
	top    []*uaNode                // children of the Objects folder, in creation order
	refuse map[string]ua.StatusCode // RefuseMonitoring, by node id text
}

// uaNode is a folder or a variable.
type uaNode struct {
	path     string // segments joined by '/'
	name     string // browse name: the last segment
	local    string // node id without namespace: "s=Line2.Speed", "i=1001"
	folder   bool
	parent   *uaNode // nil: child of Objects
	children []*uaNode

	// variables only, guarded by OPCUAServer.mu; value is never modified
	// after it is stored, so it may be encoded after the lock is released.
	value    *ua.Variant
	dataType uint32
	rank     int32
	dims     []uint32
	status   ua.StatusCode
	srcTime  time.Time
	srvTime  time.Time
}

// uaRun is one running instance: gopcua's server and the relay in front.
type uaRun struct {
	srv      *server.Server
	cancel   context.CancelFunc
	ln       net.Listener
	internal string // host:port of gopcua's own listener
	wg       sync.WaitGroup

	policies []string      // security policy URIs offered
	quit     chan struct{} // closed by Stop: ends the CurrentTime sampler

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// StartOPCUA creates the server and starts serving.
func StartOPCUA(opts OPCUAOptions) (*OPCUAServer, error) {
	s, err := newOPCUAServer(opts)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// newOPCUAServer checks opts and creates a stopped server.
func newOPCUAServer(opts OPCUAOptions) (*OPCUAServer, error) {
	if opts.NamespaceURI == "" {
		opts.NamespaceURI = DefaultNamespaceURI
	}
	if opts.NoNone && !opts.Secure {
		return nil, errors.New("sim: start opc ua: NoNone needs Secure (no security policy would be left)")
	}
	if opts.UserName && !opts.Secure {
		return nil, errors.New("sim: start opc ua: UserName needs Secure (gopcua's server offers user-name tokens only with a secure policy)")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("sim: start opc ua %q: %w", opts.Addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("sim: start opc ua %q: port: %w", opts.Addr, err)
	}
	s := &OPCUAServer{
		opts:   opts,
		log:    opts.Logger,
		host:   host,
		port:   p,
		extras: slices.Clone(opts.ExtraNamespaces),
		byPath: make(map[string]*uaNode),
		byID:   make(map[string]*uaNode),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Secure {
		if s.cert, s.key, err = serverCertificate(host); err != nil {
			return nil, fmt.Errorf("sim: start opc ua: certificate: %w", err)
		}
	}
	s.nsIdx = uint16(1 + len(s.extras)) // as Start will number it
	return s, nil
}

// serverCertificate makes a self-signed RSA 2048 application instance
// certificate for host, localhost and 127.0.0.1.
func serverCertificate(host string) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	uri, err := url.Parse(ServerApplicationURI)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "unsgate sim OPC UA server",
			Organization: []string{"unsgate"},
		},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.Equal(net.IPv4(127, 0, 0, 1)) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return der, key, nil
}

// Endpoint is the server's URL: opc.tcp://host:port.
func (s *OPCUAServer) Endpoint() string { return s.endpoint }

// NamespaceIndex is the index of the sim namespace as the running server
// (or the last one to run) numbers it.
func (s *OPCUAServer) NamespaceIndex() uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nsIdx
}

// NamespaceURI is the sim namespace's URI.
func (s *OPCUAServer) NamespaceURI() string { return s.opts.NamespaceURI }

// Certificate is the server's certificate (DER), nil unless Secure.
func (s *OPCUAServer) Certificate() []byte { return s.cert }

// Start serves again after Stop, on the same port, with the same nodes and
// values, numbered as SetExtraNamespaces and Renumber said. Starting a
// running server does nothing. It fails after Close.
func (s *OPCUAServer) Start() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return errors.New("sim: start opc ua: server closed")
	}
	if s.run.Load() != nil {
		return nil
	}
	r, err := s.start()
	if err != nil {
		return err
	}
	s.run.Store(r)
	return nil
}

func (s *OPCUAServer) start() (*uaRun, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port)))
	if err != nil {
		return nil, fmt.Errorf("sim: start opc ua on %s:%d: %w", s.host, s.port, err)
	}
	if s.endpoint == "" {
		// The first Start fixes the port (Endpoint reads it without a
		// lock, so it is written once, before StartOPCUA returns); later
		// ones bind it again.
		s.port = ln.Addr().(*net.TCPAddr).Port
		s.endpoint = fmt.Sprintf("opc.tcp://%s:%d", s.host, s.port)
	}
	// gopcua's server does not say which port it bound, so pick a free one
	// and retry if another process takes it in between.
	for attempt := 0; ; attempt++ {
		p, err := freePort("127.0.0.1")
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("sim: start opc ua: %w", err)
		}
		r, err := s.startGopcua(ln, p)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt >= 4 {
			ln.Close()
			return nil, fmt.Errorf("sim: start opc ua %s: %w", s.endpoint, err)
		}
	}
}

func (s *OPCUAServer) startGopcua(ln net.Listener, internalPort string) (*uaRun, error) {
	ip, _ := strconv.Atoi(internalPort)
	// The internal endpoint comes first: gopcua listens on the first one. The
	// public one is listed too so that GetEndpoints and CreateSession, which
	// match the client's URL, answer with the public URL.
	opts := []server.Option{
		server.EndPoint("127.0.0.1", ip),
		server.EndPoint(s.host, s.port),
		server.ServerName("unsgate sim"),
		server.ManufacturerName("unsgate"),
		server.ProductName("unsgate sim OPC UA server"),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
	}
	if !s.opts.NoNone {
		opts = append(opts, server.EnableSecurity(ua.SecurityPolicyURINone, ua.MessageSecurityModeNone))
	}
	if s.opts.Secure {
		for _, p := range SecurePolicies {
			opts = append(opts,
				server.EnableSecurity(p, ua.MessageSecurityModeSign),
				server.EnableSecurity(p, ua.MessageSecurityModeSignAndEncrypt))
		}
		opts = append(opts, server.Certificate(s.cert), server.PrivateKey(s.key))
	}
	if s.opts.UserName {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeUserName))
	}
	if s.opts.Logger != nil {
		opts = append(opts, server.SetLogger(gopcuaLogger{s.opts.Logger}))
	}
	srv := server.New(opts...)

	s.mu.Lock()
	for _, uri := range s.extras {
		server.NewNodeNameSpace(srv, uri)
	}
	space := &uaSpace{s: s}
	s.nsIdx = uint16(srv.AddNamespace(space))
	s.mu.Unlock()
	s.registerHandlers(srv)

	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	var policies []string
	if !s.opts.NoNone {
		policies = append(policies, ua.SecurityPolicyURINone)
	}
	if s.opts.Secure {
		policies = append(policies, SecurePolicies...)
	}
	r := &uaRun{
		policies: policies,
		srv:      srv,
		cancel:   cancel,
		ln:       ln,
		internal: net.JoinHostPort("127.0.0.1", internalPort),
		quit:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	r.wg.Add(2)
	go r.accept(s.log)
	go r.sampleCurrentTime()
	return r, nil
}

// CurrentTimeSampling is how often the server samples
// Server_ServerStatus_CurrentTime (i=2258) for its monitored items.
const CurrentTimeSampling = 50 * time.Millisecond

var nodeCurrentTime = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)

// sampleCurrentTime makes the server behave like a compliant one for
// i=2258: its value changes all the time (gopcua serves time.Now at read
// time), so every sample is a data change that monitored items report.
// gopcua's server never samples by itself; clients use this item to check
// that their subscription is alive.
func (r *uaRun) sampleCurrentTime() {
	defer r.wg.Done()
	t := time.NewTicker(CurrentTimeSampling)
	defer t.Stop()
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
			r.srv.ChangeNotification(nodeCurrentTime)
		}
	}
}

// accept relays every client connection to gopcua's listener.
func (r *uaRun) accept(log *slog.Logger) {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // listener closed by Stop
		}
		in, err := net.Dial("tcp", r.internal)
		if err != nil {
			log.Debug("sim opc ua: relay dial", "err", err)
			c.Close()
			continue
		}
		if !r.track(c, in) {
			c.Close()
			in.Close()
			return
		}
		r.wg.Add(2)
		go r.pipe(c, in) // server to client
		go func() {
			// Until the client's OpenSecureChannel has been checked, relay
			// message by message.
			if err := r.checkOpen(c, in); err != nil {
				log.Debug("sim opc ua: relay", "err", err)
				c.Close()
				in.Close()
			}
			r.pipe(in, c)
		}()
	}
}

// checkOpen relays the client's messages up to its OpenSecureChannel
// request and enforces the offered security policies, which gopcua's server
// does not: it opens a channel with any policy it implements. A policy that
// is not offered is refused; policy None, when not offered, is still allowed
// for discovery (GetEndpoints, FindServers), as on real servers, but any
// other request on it is refused.
func (r *uaRun) checkOpen(client, server net.Conn) error {
	discoveryOnly := false
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			return err
		}
		size := binary.LittleEndian.Uint32(hdr[4:])
		if size < 8 || size > 1<<24 {
			return fmt.Errorf("message size %d", size)
		}
		msg := make([]byte, size)
		copy(msg, hdr[:])
		if _, err := io.ReadFull(client, msg[8:]); err != nil {
			return err
		}
		typ := string(hdr[:3])
		switch typ {
		case "OPN":
			policy, ok := openPolicy(msg[8:])
			if !ok {
				return errors.New("malformed OpenSecureChannel request")
			}
			if !slices.Contains(r.policies, policy) {
				if policy != ua.SecurityPolicyURINone {
					return refuse(client, "security policy "+policy+" is not offered")
				}
				discoveryOnly = true
			}
		case "MSG":
			if discoveryOnly && !discoveryRequest(msg) {
				return refuse(client, "security policy None is offered for discovery only")
			}
		}
		if _, err := server.Write(msg); err != nil {
			return err
		}
		if typ == "OPN" && !discoveryOnly {
			return nil
		}
	}
}

func refuse(client net.Conn, reason string) error {
	_, _ = client.Write(uacpError(ua.StatusBadSecurityPolicyRejected, reason))
	return errors.New("refused: " + reason)
}

// discoveryRequest reports whether a MSG chunk on a channel with policy
// None (plain text) holds a GetEndpoints or FindServers request: after the
// message header, channel id, token id, sequence number and request id
// comes the node id of the request's encoding.
func discoveryRequest(msg []byte) bool {
	b := msg[8:]
	if len(b) < 17 {
		return false
	}
	b = b[16:]
	var typeID uint32
	switch b[0] {
	case 0x00: // two-byte node id
		typeID = uint32(b[1])
	case 0x01: // four-byte: namespace byte, uint16 id
		if len(b) < 4 || b[1] != 0 {
			return false
		}
		typeID = uint32(binary.LittleEndian.Uint16(b[2:4]))
	default:
		return false
	}
	switch typeID {
	case id.GetEndpointsRequest_Encoding_DefaultBinary, id.FindServersRequest_Encoding_DefaultBinary,
		id.FindServersOnNetworkRequest_Encoding_DefaultBinary:
		return true
	}
	return false
}

// openPolicy reads the security policy URI from the body of an OPN
// message: secure channel id, then the policy URI as a String.
func openPolicy(body []byte) (string, bool) {
	if len(body) < 8 {
		return "", false
	}
	n := int32(binary.LittleEndian.Uint32(body[4:8]))
	if n < 0 || int(n) > len(body)-8 {
		return "", false
	}
	return string(body[8 : 8+n]), true
}

// uacpError is an OPC UA TCP ERR message.
func uacpError(code ua.StatusCode, reason string) []byte {
	b := []byte("ERRF\x00\x00\x00\x00")
	b = binary.LittleEndian.AppendUint32(b, uint32(code))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(reason)))
	b = append(b, reason...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	return b
}

func (r *uaRun) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst until either side fails, then closes both: a client that
// goes away ends gopcua's side of the connection and vice versa.
func (r *uaRun) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	r.mu.Lock()
	delete(r.conns, dst)
	delete(r.conns, src)
	r.mu.Unlock()
}

// Stop closes the listener and every client connection (the server is down
// for clients: their next request fails with a closed connection) and shuts
// gopcua's server down, ending its subscriptions. Start serves again.
// Stopping a stopped server does nothing.
func (s *OPCUAServer) Stop() error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.stop()
}

func (s *OPCUAServer) stop() error {
	r := s.run.Swap(nil)
	if r == nil {
		return nil
	}
	r.ln.Close()
	close(r.quit)
	r.mu.Lock()
	r.done = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()

	// Subscriptions run on goroutines of their own that only end when
	// deleted or when their lifetime runs out; gopcua's Close does not end them.
	if subs := r.srv.SubscriptionService; subs != nil {
		subs.Mu.Lock()
		ids := make([]uint32, 0, len(subs.Subs))
		for id := range subs.Subs {
			ids = append(ids, id)
		}
		subs.Mu.Unlock()
		for _, id := range ids {
			subs.DeleteSubscription(id)
		}
	}
	err := r.srv.Close()
	// gopcua's accept loop and request dispatcher end with the context only.
	r.cancel()
	if err != nil {
		return fmt.Errorf("sim: stop opc ua %s: %w", s.endpoint, err)
	}
	return nil
}

// DropSubscriptions deletes every subscription of every session with its
// monitored items, leaving sessions and connections open, as a server that
// lost its subscriptions (a redundancy switch-over, a resource limit, a
// bug) does. Clients are not told: their publish requests go unanswered.
// It returns how many subscriptions it deleted; none while stopped. Their
// ids stay reserved.
func (s *OPCUAServer) DropSubscriptions() int {
	r := s.run.Load()
	if r == nil {
		return 0
	}
	subs := r.srv.SubscriptionService
	subs.Mu.Lock()
	var ids []uint32
	for id, sub := range subs.Subs {
		if sub.Session != nil { // not a reserved id
			ids = append(ids, id)
		}
	}
	subs.Mu.Unlock()
	for _, id := range ids {
		subs.DeleteSubscription(id)
	}
	return len(ids)
}

// Close stops the server for good. It is idempotent.
func (s *OPCUAServer) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	s.closed = true
	return s.stop()
}

// SetExtraNamespaces replaces the namespaces registered before the sim
// namespace. It takes effect at the next Start.
func (s *OPCUAServer) SetExtraNamespaces(uris ...string) {
	s.mu.Lock()
	s.extras = slices.Clone(uris)
	s.mu.Unlock()
}

// AddVariable creates folders under Objects for every segment of path but
// the last (browse names = the segments; folder node ids are
// ns=IDX;s=<segments joined by '.'>) and a variable named by the last
// segment. Its node id is ns=IDX;s=<segments joined by '.'> unless id is
// given: "i=1001", "g=<guid>", "b=<base64>" or "s=Name", in the sim
// namespace. It returns the node id text with ns=.
//
// value's Go type sets the OPC UA type: bool, int8 (SByte), int16, int32,
// int64, uint8 (Byte), uint16, uint32, uint64, float32 (Float), float64
// (Double), string, time.Time (DateTime), []byte (ByteString),
// *ua.LocalizedText, *ua.GUID, and slices of these (one-dimensional arrays)
// except [][]byte: gopcua v0.9.0 cannot encode ByteString arrays.
// Its status is Good and its timestamps now.
func (s *OPCUAServer) AddVariable(path string, value any, idText ...string) string {
	segs := splitPath(path)
	v, dt, rank, dims := variant(value)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byPath[path] != nil {
		panic(fmt.Sprintf("sim: AddVariable %q: exists", path))
	}
	var parent *uaNode
	for i := 1; i < len(segs); i++ {
		p := strings.Join(segs[:i], "/")
		n := s.byPath[p]
		if n == nil {
			n = &uaNode{path: p, name: segs[i-1], local: "s=" + strings.Join(segs[:i], "."), folder: true, parent: parent}
			s.insert(n)
		} else if !n.folder {
			panic(fmt.Sprintf("sim: AddVariable %q: %q is a variable", path, p))
		}
		parent = n
	}
	local := "s=" + strings.Join(segs, ".")
	if len(idText) > 0 && idText[0] != "" {
		local = localID(idText[0])
	}
	now := time.Now()
	n := &uaNode{
		path: path, name: segs[len(segs)-1], local: local, parent: parent,
		value: v, dataType: dt, rank: rank, dims: dims, status: ua.StatusGood,
		srcTime: now, srvTime: now,
	}
	s.insert(n)
	return fmt.Sprintf("ns=%d;%s", s.nsIdx, local)
}

// insert adds n to the indexes and its parent. s.mu must be held.
func (s *OPCUAServer) insert(n *uaNode) {
	if s.byID[n.local] != nil {
		panic(fmt.Sprintf("sim: %q: node id %s is taken by %q", n.path, n.local, s.byID[n.local].path))
	}
	s.byPath[n.path] = n
	s.byID[n.local] = n
	if n.parent == nil {
		s.top = append(s.top, n)
	} else {
		n.parent.children = append(n.parent.children, n)
	}
}

func splitPath(path string) []string {
	segs := strings.Split(path, "/")
	for _, seg := range segs {
		if seg == "" {
			panic(fmt.Sprintf("sim: opc ua path %q: empty segment", path))
		}
	}
	return segs
}

// localID checks a node id given without namespace and returns it in the
// form the library prints, so that lookups by a client's node id match.
func localID(text string) string {
	if len(text) < 3 || text[1] != '=' || !strings.ContainsRune("isgb", rune(text[0])) {
		panic(fmt.Sprintf("sim: node id %q: want i=…, s=…, g=… or b=…, without namespace", text))
	}
	nid, err := ua.ParseNodeID("ns=1;" + text)
	if err != nil {
		panic(fmt.Sprintf("sim: node id %q: %v", text, err))
	}
	return strings.TrimPrefix(nid.String(), "ns=1;")
}

// variant converts a Go value to the variant it is served as, and gives its
// data type node id (the built-in type id), value rank and dimensions. The
// value is copied where the caller could change it later.
func variant(value any) (*ua.Variant, uint32, int32, []uint32) {
	value = copyValue(value)
	if _, ok := value.([][]byte); ok {
		// Variant.Encode writes nothing for the elements of a ByteString
		// array (it hands the whole [][]byte to encodeValue), so the client
		// would get a truncated message.
		panic("sim: opc ua value [][]byte: gopcua v0.9.0 cannot encode ByteString arrays")
	}
	v, err := ua.NewVariant(value)
	if err != nil {
		panic(fmt.Sprintf("sim: opc ua value %T: %v", value, err))
	}
	dt := uint32(v.Type())
	if dt == uint32(ua.TypeIDVariant) || dt == 0 || !supported(value) {
		panic(fmt.Sprintf("sim: opc ua value type %T is not supported", value))
	}
	if v.ArrayLength() >= 0 && v.Has(ua.VariantArrayValues) {
		return v, dt, 1, []uint32{uint32(v.ArrayLength())}
	}
	return v, dt, -1, nil
}

func supported(value any) bool {
	t := reflect.TypeOf(value)
	if t.Kind() == reflect.Slice && t != reflect.TypeOf([]byte(nil)) {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeOf(false), reflect.TypeOf(int8(0)), reflect.TypeOf(int16(0)),
		reflect.TypeOf(int32(0)), reflect.TypeOf(int64(0)), reflect.TypeOf(uint8(0)),
		reflect.TypeOf(uint16(0)), reflect.TypeOf(uint32(0)), reflect.TypeOf(uint64(0)),
		reflect.TypeOf(float32(0)), reflect.TypeOf(float64(0)), reflect.TypeOf(""),
		reflect.TypeOf(time.Time{}), reflect.TypeOf([]byte(nil)),
		reflect.TypeOf((*ua.LocalizedText)(nil)), reflect.TypeOf((*ua.GUID)(nil)):
		return true
	}
	return false
}

// copyValue copies slices and pointed-to values so the caller may reuse
// them after Set. Nil pointers are not allowed (the encoder would fail).
func copyValue(value any) any {
	switch v := value.(type) {
	case []byte:
		return slices.Clone(v)
	case *ua.LocalizedText:
		if v == nil {
			panic("sim: opc ua value: nil *ua.LocalizedText")
		}
		c := *v
		c.UpdateMask()
		return &c
	case *ua.GUID:
		if v == nil {
			panic("sim: opc ua value: nil *ua.GUID")
		}
		c := *v
		return &c
	case []*ua.LocalizedText:
		out := make([]*ua.LocalizedText, len(v))
		for i := range v {
			out[i] = copyValue(v[i]).(*ua.LocalizedText)
		}
		return out
	case []*ua.GUID:
		out := make([]*ua.GUID, len(v))
		for i := range v {
			out[i] = copyValue(v[i]).(*ua.GUID)
		}
		return out
	}
	rv := reflect.ValueOf(value)
	if rv.Kind() == reflect.Slice {
		c := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
		reflect.Copy(c, rv)
		return c.Interface()
	}
	return value
}

// Set changes a variable's value (and its type, if value's differs), with
// status Good and source and server timestamps now, and notifies
// subscriptions.
func (s *OPCUAServer) Set(path string, value any) {
	v, dt, rank, dims := variant(value)
	now := time.Now()
	s.notify(s.change(path, "Set", func(n *uaNode) {
		n.value, n.dataType, n.rank, n.dims = v, dt, rank, dims
		n.status, n.srcTime, n.srvTime = ua.StatusGood, now, now
	}))
}

// SetStatus sets a variable's status code (Uncertain or Bad), keeping its
// value, with timestamps now, and notifies subscriptions. StatusGood makes
// it good again.
func (s *OPCUAServer) SetStatus(path string, code ua.StatusCode) {
	now := time.Now()
	s.notify(s.change(path, "SetStatus", func(n *uaNode) {
		n.status, n.srcTime, n.srvTime = code, now, now
	}))
}

// change applies f to the variable at path and returns its node id.
func (s *OPCUAServer) change(path, op string, f func(*uaNode)) *ua.NodeID {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.variable(path, op)
	f(n)
	return s.nodeID(n)
}

// Renumber gives the variable at path a new node id ("i=…", "s=…", "g=…",
// "b=…", in the sim namespace). It is meant for a stopped server (a server
// that renumbers on reboot); on a running one, clients see the change at
// once and subscriptions on the old id get no more changes.
func (s *OPCUAServer) Renumber(path, idText string) {
	local := localID(idText)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.variable(path, "Renumber")
	if other := s.byID[local]; other != nil && other != n {
		panic(fmt.Sprintf("sim: Renumber %q: node id %s is taken by %q", path, local, other.path))
	}
	delete(s.byID, n.local)
	n.local = local
	s.byID[local] = n
}

// NodeID is the node id text (ns=IDX;…) of the variable or folder at path.
func (s *OPCUAServer) NodeID(path string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.byPath[path]
	if n == nil {
		panic(fmt.Sprintf("sim: NodeID %q: no such node", path))
	}
	return s.nodeID(n).String()
}

func (s *OPCUAServer) variable(path, op string) *uaNode {
	n := s.byPath[path]
	if n == nil || n.folder {
		panic(fmt.Sprintf("sim: %s %q: no such variable", op, path))
	}
	return n
}

// nodeID is n's node id in the current numbering. s.mu must be held.
func (s *OPCUAServer) nodeID(n *uaNode) *ua.NodeID {
	nid, err := ua.ParseNodeID(fmt.Sprintf("ns=%d;%s", s.nsIdx, n.local))
	if err != nil {
		panic(fmt.Sprintf("sim: node id of %q: %v", n.path, err)) // checked by localID
	}
	return nid
}

// notify tells gopcua's server that a node changed: it has no sampling of
// its own. It must not be called with s.mu held: gopcua reads the value
// back through the namespace while holding its own lock.
func (s *OPCUAServer) notify(nid *ua.NodeID) {
	if r := s.run.Load(); r != nil {
		r.srv.ChangeNotification(nid)
	}
}

// lookup finds the node of a client's node id. s.mu must be held.
func (s *OPCUAServer) lookup(nid *ua.NodeID) *uaNode {
	if nid == nil || nid.Namespace() != s.nsIdx {
		return nil
	}
	return s.byID[strings.TrimPrefix(nid.String(), fmt.Sprintf("ns=%d;", s.nsIdx))]
}

// uaSpace is the sim namespace as gopcua's server sees it. Nodes live in
// the OPCUAServer, not in gopcua's node type, so that values, status codes,
// data types and renumbering are under the sim's control.
type uaSpace struct {
	s  *OPCUAServer
	id atomic.Uint32
}

var _ server.NameSpace = (*uaSpace)(nil)

func (sp *uaSpace) Name() string                        { return sp.s.opts.NamespaceURI }
func (sp *uaSpace) AddNode(n *server.Node) *server.Node { return n }
func (sp *uaSpace) Node(*ua.NodeID) *server.Node        { return nil }
func (sp *uaSpace) Objects() *server.Node               { return nil }
func (sp *uaSpace) Root() *server.Node                  { return nil }
func (sp *uaSpace) ID() uint16                          { return uint16(sp.id.Load()) }
func (sp *uaSpace) SetID(id uint16)                     { sp.id.Store(uint32(id)) }

func (sp *uaSpace) SetAttribute(*ua.NodeID, ua.AttributeID, *ua.DataValue) ua.StatusCode {
	return ua.StatusBadNotWritable
}

func badValue(code ua.StatusCode) *ua.DataValue {
	return &ua.DataValue{
		EncodingMask:    ua.DataValueServerTimestamp | ua.DataValueStatusCode,
		ServerTimestamp: time.Now(),
		Status:          code,
	}
}

func attrValue(v any) *ua.DataValue {
	return &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(v)}
}

// Browse-visible type definitions and reference types.
var (
	folderType       = ua.NewNumericExpandedNodeID(0, id.FolderType)
	variableType     = ua.NewNumericExpandedNodeID(0, id.BaseDataVariableType)
	refOrganizes     = ua.NewNumericNodeID(0, id.Organizes)
	refHasComponent  = ua.NewNumericNodeID(0, id.HasComponent)
	refHasTypeDef    = ua.NewNumericNodeID(0, id.HasTypeDefinition)
	objectsFolderID  = ua.NewNumericNodeID(0, id.ObjectsFolder)
	accessReadOnly   = byte(ua.AccessLevelTypeCurrentRead)
	supertypeOfRefID = map[uint32]uint32{
		id.Organizes:                 id.HierarchicalReferences,
		id.HasComponent:              id.Aggregates,
		id.Aggregates:                id.HasChild,
		id.HasChild:                  id.HierarchicalReferences,
		id.HierarchicalReferences:    id.References,
		id.HasTypeDefinition:         id.NonHierarchicalReferences,
		id.NonHierarchicalReferences: id.References,
	}
)

func (sp *uaSpace) Attribute(nid *ua.NodeID, attr ua.AttributeID) *ua.DataValue {
	s := sp.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.lookup(nid)
	if n == nil {
		return badValue(ua.StatusBadNodeIDUnknown)
	}
	switch attr {
	case ua.AttributeIDNodeID:
		return attrValue(s.nodeID(n))
	case ua.AttributeIDNodeClass:
		if n.folder {
			return attrValue(int32(ua.NodeClassObject))
		}
		return attrValue(int32(ua.NodeClassVariable))
	case ua.AttributeIDBrowseName:
		return attrValue(&ua.QualifiedName{NamespaceIndex: s.nsIdx, Name: n.name})
	case ua.AttributeIDDisplayName:
		return attrValue(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: n.name})
	case ua.AttributeIDDescription:
		return attrValue(&ua.LocalizedText{})
	case ua.AttributeIDWriteMask, ua.AttributeIDUserWriteMask:
		return attrValue(uint32(0))
	}
	if n.folder {
		if attr == ua.AttributeIDEventNotifier {
			return attrValue(byte(0))
		}
		return badValue(ua.StatusBadAttributeIDInvalid)
	}
	switch attr {
	case ua.AttributeIDValue:
		dv := &ua.DataValue{
			EncodingMask:    ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
			Value:           n.value,
			SourceTimestamp: n.srcTime,
			ServerTimestamp: n.srvTime,
		}
		if n.status != ua.StatusGood {
			dv.EncodingMask |= ua.DataValueStatusCode
			dv.Status = n.status
		}
		return dv
	case ua.AttributeIDDataType:
		return attrValue(ua.NewNumericNodeID(0, n.dataType))
	case ua.AttributeIDValueRank:
		return attrValue(n.rank)
	case ua.AttributeIDArrayDimensions:
		if n.dims == nil {
			return attrValue([]uint32(nil))
		}
		return attrValue(slices.Clone(n.dims))
	case ua.AttributeIDAccessLevel, ua.AttributeIDUserAccessLevel:
		return attrValue(accessReadOnly)
	case ua.AttributeIDMinimumSamplingInterval:
		return attrValue(float64(0))
	case ua.AttributeIDHistorizing:
		return attrValue(false)
	}
	return badValue(ua.StatusBadAttributeIDInvalid)
}

func (sp *uaSpace) Browse(bd *ua.BrowseDescription) *ua.BrowseResult {
	s := sp.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.lookup(bd.NodeID)
	if n == nil {
		return &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDUnknown}
	}
	var refs []*ua.ReferenceDescription
	// Type definition first, as gopcua's own namespaces do.
	if n.folder {
		refs = s.appendRef(refs, bd, refHasTypeDef, true, nil, folderType)
	} else {
		refs = s.appendRef(refs, bd, refHasTypeDef, true, nil, variableType)
	}
	if n.parent == nil {
		refs = s.appendRef(refs, bd, refOrganizes, false, nil, nil)
	} else {
		refs = s.appendRef(refs, bd, childRef(n), false, n.parent, nil)
	}
	for _, c := range n.children {
		refs = s.appendRef(refs, bd, childRef(c), true, c, nil)
	}
	return &ua.BrowseResult{StatusCode: ua.StatusGood, References: refs}
}

// childRef is the reference type from a folder to the child c: folders
// organize folders and have variables as components, like most servers.
func childRef(c *uaNode) *ua.NodeID {
	if c.folder {
		return refOrganizes
	}
	return refHasComponent
}

// appendRef adds a reference to target (nil: the Objects folder, or the
// type definition typeDef) if bd asks for it. s.mu must be held.
func (s *OPCUAServer) appendRef(refs []*ua.ReferenceDescription, bd *ua.BrowseDescription,
	refType *ua.NodeID, forward bool, target *uaNode, typeDef *ua.ExpandedNodeID) []*ua.ReferenceDescription {
	switch bd.BrowseDirection {
	case ua.BrowseDirectionForward:
		if !forward {
			return refs
		}
	case ua.BrowseDirectionInverse:
		if forward {
			return refs
		}
	}
	if !refTypeMatches(bd.ReferenceTypeID, refType, bd.IncludeSubtypes) {
		return refs
	}
	rd := &ua.ReferenceDescription{ReferenceTypeID: refType, IsForward: forward}
	switch {
	case typeDef != nil:
		rd.NodeID = typeDef
		rd.NodeClass = ua.NodeClassObjectType
		if typeDef.NodeID.IntID() == id.BaseDataVariableType {
			rd.NodeClass = ua.NodeClassVariableType
		}
		name := "FolderType"
		if rd.NodeClass == ua.NodeClassVariableType {
			name = "BaseDataVariableType"
		}
		rd.BrowseName = &ua.QualifiedName{Name: name}
		rd.DisplayName = &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: name}
		rd.TypeDefinition = ua.NewTwoByteExpandedNodeID(0)
	case target == nil:
		rd.NodeID = &ua.ExpandedNodeID{NodeID: objectsFolderID}
		rd.NodeClass = ua.NodeClassObject
		rd.BrowseName = &ua.QualifiedName{Name: "Objects"}
		rd.DisplayName = &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "Objects"}
		rd.TypeDefinition = folderType
	default:
		s.describe(rd, target)
	}
	if bd.NodeClassMask != 0 && bd.NodeClassMask&uint32(rd.NodeClass) == 0 {
		return refs
	}
	return append(refs, rd)
}

// describe fills the target side of a reference to n. s.mu must be held.
func (s *OPCUAServer) describe(rd *ua.ReferenceDescription, n *uaNode) {
	rd.NodeID = &ua.ExpandedNodeID{NodeID: s.nodeID(n)}
	rd.BrowseName = &ua.QualifiedName{NamespaceIndex: s.nsIdx, Name: n.name}
	rd.DisplayName = &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: n.name}
	if n.folder {
		rd.NodeClass = ua.NodeClassObject
		rd.TypeDefinition = folderType
	} else {
		rd.NodeClass = ua.NodeClassVariable
		rd.TypeDefinition = variableType
	}
}

// refTypeMatches reports whether a reference of type ref is asked for by a
// browse filtered on want: the null id asks for all.
func refTypeMatches(want, ref *ua.NodeID, subtypes bool) bool {
	if want == nil || (want.Namespace() == 0 && want.IntID() == 0) {
		return true
	}
	if want.Namespace() != 0 {
		return false
	}
	t := ref.IntID()
	if want.IntID() == t {
		return true
	}
	if !subtypes {
		return false
	}
	for {
		sup, ok := supertypeOfRefID[t]
		if !ok {
			return false
		}
		if sup == want.IntID() {
			return true
		}
		t = sup
	}
}

// registerHandlers replaces some of gopcua's service handlers before the
// server starts (gopcua keeps a handler registered first):
//   - Browse, so that the Objects folder of namespace 0 also lists the sim's
//     top-level nodes, read from the sim's own index;
//   - the subscription and monitored-item services, to answer requests that
//     would make gopcua dereference nil (unknown session, subscription or
//     item) with a status code instead of crashing the process, and to keep
//     gopcua from ever reusing a subscription id (createSubscription).
func (s *OPCUAServer) registerHandlers(srv *server.Server) {
	srv.RegisterHandler(id.BrowseRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.BrowseRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		res := make([]*ua.BrowseResult, len(req.NodesToBrowse))
		for i, bd := range req.NodesToBrowse {
			res[i] = s.browse(srv, bd)
		}
		return &ua.BrowseResponse{
			ResponseHeader:  responseHeader(req.RequestHeader),
			Results:         res,
			DiagnosticInfos: []*ua.DiagnosticInfo{},
		}, nil
	})

	srv.RegisterHandler(id.CreateSubscriptionRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		sess := srv.Session(r.Header())
		if sess == nil {
			return nil, ua.StatusBadSessionIDInvalid
		}
		return s.createSubscription(srv, sc, r, reqID)
	})

	srv.RegisterHandler(id.DeleteSubscriptionsRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.DeleteSubscriptionsRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		sess := srv.Session(req.RequestHeader)
		if sess == nil {
			return nil, ua.StatusBadSessionIDInvalid
		}
		subs := srv.SubscriptionService
		res := make([]ua.StatusCode, len(req.SubscriptionIDs))
		var del []uint32
		subs.Mu.Lock()
		for i, sid := range req.SubscriptionIDs {
			sub := subs.Subs[sid]
			switch {
			case sub == nil || sub.Session == nil: // unknown or a reserved id
				res[i] = ua.StatusBadSubscriptionIDInvalid
			case sub.Session.AuthTokenID.String() != sess.AuthTokenID.String():
				res[i] = ua.StatusBadSessionIDInvalid
			default:
				res[i] = ua.StatusOK
				del = append(del, sid)
			}
		}
		subs.Mu.Unlock()
		// Deleted before answering (gopcua deletes in the background), so
		// the client gets no publish for it afterwards.
		for _, sid := range del {
			subs.DeleteSubscription(sid)
		}
		return &ua.DeleteSubscriptionsResponse{
			ResponseHeader:  responseHeader(req.RequestHeader),
			Results:         res,
			DiagnosticInfos: []*ua.DiagnosticInfo{},
		}, nil
	})

	srv.RegisterHandler(id.CreateMonitoredItemsRequest_Encoding_DefaultBinary, func(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
		req, ok := r.(*ua.CreateMonitoredItemsRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		sess := srv.Session(req.RequestHeader)
		if sess == nil {
			return nil, ua.StatusBadSessionIDInvalid
		}
		subs := srv.SubscriptionService
		subs.Mu.Lock()
		sub := subs.Subs[req.SubscriptionID]
		subs.Mu.Unlock()
		if sub == nil || sub.Session == nil || sub.Session.AuthTokenID.String() != sess.AuthTokenID.String() {
			return nil, ua.StatusBadSubscriptionIDInvalid
		}
		for _, it := range req.ItemsToCreate {
			if it == nil || it.ItemToMonitor == nil || it.ItemToMonitor.NodeID == nil || it.RequestedParameters == nil {
				return nil, ua.StatusBadMonitoredItemIDInvalid
			}
		}
		return s.createMonitoredItems(srv, sc, req, reqID)
	})

	srv.RegisterHandler(id.DeleteMonitoredItemsRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.DeleteMonitoredItemsRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		sess := srv.Session(req.RequestHeader)
		if sess == nil {
			return nil, ua.StatusBadSessionIDInvalid
		}
		items := srv.MonitoredItemService
		res, del := ownedItems(items, req.SubscriptionID, req.MonitoredItemIDs, sess.AuthTokenID.String(), nil)
		for _, mid := range del {
			items.DeleteMonitoredItem(mid)
		}
		return &ua.DeleteMonitoredItemsResponse{
			ResponseHeader:  responseHeader(req.RequestHeader),
			Results:         res,
			DiagnosticInfos: []*ua.DiagnosticInfo{},
		}, nil
	})

	srv.RegisterHandler(id.SetMonitoringModeRequest_Encoding_DefaultBinary, func(_ *uasc.SecureChannel, r ua.Request, _ uint32) (ua.Response, error) {
		req, ok := r.(*ua.SetMonitoringModeRequest)
		if !ok {
			return nil, ua.StatusBadRequestTypeInvalid
		}
		sess := srv.Session(req.RequestHeader)
		if sess == nil {
			return nil, ua.StatusBadSessionIDInvalid
		}
		res, _ := ownedItems(srv.MonitoredItemService, req.SubscriptionID, req.MonitoredItemIDs, sess.AuthTokenID.String(),
			// Recorded only: gopcua reports changes whatever the mode.
			func(it *server.MonitoredItem) { it.Mode = req.MonitoringMode })
		return &ua.SetMonitoringModeResponse{
			ResponseHeader:  responseHeader(req.RequestHeader),
			Results:         res,
			DiagnosticInfos: []*ua.DiagnosticInfo{},
		}, nil
	})
}

// ownedItems answers a request naming monitored items ids of subscription
// subID: StatusOK for each that exists there and belongs to the session
// with authentication token token (f, if set, is applied to it under the
// service's lock), else the reason. It returns the results and the ids
// that were OK.
func ownedItems(items *server.MonitoredItemService, subID uint32, ids []uint32, token string, f func(*server.MonitoredItem)) ([]ua.StatusCode, []uint32) {
	res := make([]ua.StatusCode, len(ids))
	var owned []uint32
	items.Mu.Lock()
	defer items.Mu.Unlock()
	for i, mid := range ids {
		it := items.Items[mid]
		switch {
		case it == nil || it.Sub == nil || it.Sub.ID != subID:
			res[i] = ua.StatusBadMonitoredItemIDInvalid
		case it.Sub.Session == nil || it.Sub.Session.AuthTokenID.String() != token:
			res[i] = ua.StatusBadSessionIDInvalid
		default:
			if f != nil {
				f(it)
			}
			res[i] = ua.StatusOK
			owned = append(owned, mid)
		}
	}
	return res, owned
}

// createSubscription hands out subscription ids that were never used
// before in the server's life, across Stop and Start.
//
// gopcua numbers a new subscription len(Subs)+1, which reuses a deleted
// one's id, and it deletes a deleted subscription a second time, later,
// from the subscription's own goroutine: that late delete would end a new
// subscription with the reused id, monitored items and all (and a client
// holding an old id could act on a stranger's subscription). So every id
// up to the highest ever handed out that is not live is held by a reserved
// entry (no session, never started, tiny) and len(Subs)+1 is always a new
// id. A late delete may remove a reserved entry; the next create puts it
// back. subMu makes fill, create and record one step for creates; a late
// delete landing between fill and create makes gopcua hand out an old id,
// and that subscription (nobody has seen it) is deleted and another one
// made.
func (s *OPCUAServer) createSubscription(srv *server.Server, sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	subs := srv.SubscriptionService
	for {
		subs.Mu.Lock()
		for sid := uint32(1); sid <= s.subTop && uint32(len(subs.Subs)) < s.subTop; sid++ {
			if subs.Subs[sid] == nil {
				subs.Subs[sid] = &server.Subscription{ID: sid}
			}
		}
		subs.Mu.Unlock()
		res, err := subs.CreateSubscription(sc, r, reqID)
		cs, ok := res.(*ua.CreateSubscriptionResponse)
		if err != nil || !ok {
			return res, err
		}
		if cs.SubscriptionID > s.subTop {
			s.subTop = cs.SubscriptionID
			return res, nil
		}
		subs.DeleteSubscription(cs.SubscriptionID)
	}
}

// createMonitoredItems answers the items on nodes RefuseMonitoring names
// with their status code and lets gopcua create the others.
func (s *OPCUAServer) createMonitoredItems(srv *server.Server, sc *uasc.SecureChannel, req *ua.CreateMonitoredItemsRequest, reqID uint32) (ua.Response, error) {
	s.mu.RLock()
	refused := make([]ua.StatusCode, len(req.ItemsToCreate))
	var keep []*ua.MonitoredItemCreateRequest
	for i, it := range req.ItemsToCreate {
		if code, ok := s.refuse[it.ItemToMonitor.NodeID.String()]; ok {
			refused[i] = code
			continue
		}
		keep = append(keep, it)
	}
	s.mu.RUnlock()
	if len(keep) == len(req.ItemsToCreate) {
		return srv.MonitoredItemService.CreateMonitoredItems(sc, req, reqID)
	}
	var created []*ua.MonitoredItemCreateResult
	if len(keep) > 0 {
		part := *req
		part.ItemsToCreate = keep
		res, err := srv.MonitoredItemService.CreateMonitoredItems(sc, &part, reqID)
		if err != nil {
			return res, err
		}
		cr, ok := res.(*ua.CreateMonitoredItemsResponse)
		if !ok || len(cr.Results) != len(keep) {
			return nil, ua.StatusBadInternalError
		}
		created = cr.Results
	}
	results := make([]*ua.MonitoredItemCreateResult, len(req.ItemsToCreate))
	for i := range results {
		if refused[i] != ua.StatusOK {
			results[i] = &ua.MonitoredItemCreateResult{StatusCode: refused[i], FilterResult: ua.NewExtensionObject(nil)}
			continue
		}
		results[i], created = created[0], created[1:]
	}
	return &ua.CreateMonitoredItemsResponse{
		ResponseHeader:  responseHeader(req.RequestHeader),
		Results:         results,
		DiagnosticInfos: []*ua.DiagnosticInfo{},
	}, nil
}

// RefuseMonitoring makes CreateMonitoredItems answer code (a bad status)
// for items on nodeID, as servers do for nodes they cannot monitor (limits,
// access rights, unsupported nodes); StatusOK lets them be created again.
// nodeID is a node id's text with ns= (as AddVariable returns it, or
// "i=2258" for namespace 0). Items created before are not touched.
func (s *OPCUAServer) RefuseMonitoring(nodeID string, code ua.StatusCode) {
	nid, err := ua.ParseNodeID(nodeID)
	if err != nil {
		panic(fmt.Sprintf("sim: RefuseMonitoring %q: %v", nodeID, err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == ua.StatusOK {
		delete(s.refuse, nid.String())
		return
	}
	if s.refuse == nil {
		s.refuse = map[string]ua.StatusCode{}
	}
	s.refuse[nid.String()] = code
}

// browse answers one node of a Browse request.
func (s *OPCUAServer) browse(srv *server.Server, bd *ua.BrowseDescription) *ua.BrowseResult {
	if bd == nil || bd.NodeID == nil {
		return &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDInvalid}
	}
	ns, err := srv.Namespace(int(bd.NodeID.Namespace()))
	if err != nil {
		return &ua.BrowseResult{StatusCode: ua.StatusBadNodeIDUnknown}
	}
	res := ns.Browse(bd)
	if !bd.NodeID.Equal(objectsFolderID) || res.StatusCode != ua.StatusGood {
		return res
	}
	// The sim's top-level nodes are organized by namespace 0's Objects.
	if bd.BrowseDirection == ua.BrowseDirectionInverse || !refTypeMatches(bd.ReferenceTypeID, refOrganizes, bd.IncludeSubtypes) {
		return res
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.top {
		rd := &ua.ReferenceDescription{ReferenceTypeID: refOrganizes, IsForward: true}
		s.describe(rd, n)
		if bd.NodeClassMask != 0 && bd.NodeClassMask&uint32(rd.NodeClass) == 0 {
			continue
		}
		res.References = append(res.References, rd)
	}
	return res
}

func responseHeader(req *ua.RequestHeader) *ua.ResponseHeader {
	var handle uint32
	if req != nil {
		handle = req.RequestHandle
	}
	return &ua.ResponseHeader{
		Timestamp:          time.Now(),
		RequestHandle:      handle,
		ServiceResult:      ua.StatusOK,
		ServiceDiagnostics: &ua.DiagnosticInfo{},
		StringTable:        []string{},
		AdditionalHeader:   ua.NewExtensionObject(nil),
	}
}

// gopcuaLogger adapts slog to gopcua's printf-style logger, at debug level:
// gopcua logs routine events (a client going away, Stop) as errors.
type gopcuaLogger struct{ l *slog.Logger }

func (g gopcuaLogger) Debug(msg string, args ...any) { g.log("debug", msg, args) }
func (g gopcuaLogger) Info(msg string, args ...any)  { g.log("info", msg, args) }
func (g gopcuaLogger) Warn(msg string, args ...any)  { g.log("warn", msg, args) }
func (g gopcuaLogger) Error(msg string, args ...any) { g.log("error", msg, args) }

func (g gopcuaLogger) log(level, msg string, args []any) {
	g.l.Debug("gopcua server: "+strings.TrimSpace(fmt.Sprintf(msg, args...)), "level", level)
}
