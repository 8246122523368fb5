package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
)

// pki is a throw-away CA with a server and a client certificate, written as
// PEM files.
type pki struct {
	dir                   string
	caFile                string
	serverCert            tls.Certificate
	clientCert, clientKey string
	pool                  *x509.CertPool
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{dir: dir, caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", caDER)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := issue(2, "broker", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliDER, cliKey := issue(3, "gw1", x509.ExtKeyUsageClientAuth, nil)
	p.clientCert, p.clientKey = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writePEM(t, p.clientCert, "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, p.clientKey, "EC PRIVATE KEY", keyDER)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mqtts with a private CA and a required client certificate, against
// mochi's TLS listener.
func TestSinkTLSWithClientCertificate(t *testing.T) {
	p := newPKI(t, "good")
	b := startBroker(t, broker.Config{TLS: &tls.Config{
		Certificates: []tls.Certificate{p.serverCert},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	if !strings.HasPrefix(b.URL(), "mqtts://127.0.0.1:") {
		t.Fatalf("broker URL %s", b.URL())
	}

	cfg := fastConfig(b.URL())
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = p.caFile, p.clientCert, p.clientKey
	sink := newSink(t, cfg)
	q := publish.NewQueue(100)
	pts := points(testTags(4), 20)
	q.PushBatch(messagesFor(pts))
	runSink(t, sink, q)
	waitFor(t, "delivery over TLS", 10*time.Second, func() bool { return sink.Status().Sent == 20 })

	clientPair, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b.Addr(), &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{clientPair}, ServerName: "127.0.0.1"}, "acme/site/area/#")
	waitFor(t, "retained values over TLS", 5*time.Second, func() bool { return len(sub.messages()) == 4 })
	for _, m := range sub.messages() {
		if !m.Retain || m.ContentType != "application/json" {
			t.Fatalf("delivery %+v", m)
		}
	}

	// A CA that did not sign the broker's certificate: no connection, and
	// an error that says why.
	other := newPKI(t, "other")
	cfg.CAFile = other.caFile
	cfg.ClientID = "unsgate-gw1-wrong-ca"
	wrongCA := newSink(t, cfg)
	runSink(t, wrongCA, publish.NewQueue(10))
	waitFor(t, "certificate error", 10*time.Second, func() bool {
		return strings.Contains(wrongCA.Status().LastError, "is ca_file the CA that signed the broker's certificate?")
	})

	// No client certificate: the broker refuses the handshake.
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = p.caFile, "", ""
	cfg.ClientID = "unsgate-gw1-no-cert"
	noCert := newSink(t, cfg)
	runSink(t, noCert, publish.NewQueue(10))
	waitFor(t, "handshake refused", 10*time.Second, func() bool {
		return strings.Contains(noCert.Status().LastError, "certificate required")
	})
	for _, s := range []*Sink{wrongCA, noCert} {
		if st := s.Status(); st.Connected || st.Connects != 0 {
			t.Fatalf("status %+v", st)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	p := newPKI(t, "cfg")
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	cases := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; nil = valid
	}{
		{"minimal", Config{URL: "mqtt://broker"}, nil},
		{"tcp alias", Config{URL: "tcp://10.0.0.1:1884"}, nil},
		{"tls", Config{URL: "mqtts://127.0.0.1", CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, nil},
		{"ssl alias", Config{URL: "ssl://broker:8883", InsecureSkipVerify: true}, nil},
		{"no url", Config{}, []string{"url is required"}},
		{"scheme", Config{URL: "http://broker"}, []string{`unsupported scheme "http"`}},
		{"no host", Config{URL: "mqtt://:1883"}, []string{"missing host"}},
		{"user in url", Config{URL: "mqtt://u:secret@broker"}, []string{"credentials in the URL"}},
		{"path", Config{URL: "mqtt://broker/x"}, []string{"unexpected path"}},
		{"tls on plain", Config{URL: "mqtt://broker", CAFile: p.caFile}, []string{"need an mqtts:// URL"}},
		{"missing ca", Config{URL: "mqtts://broker", CAFile: "/nonexistent/ca.pem"}, []string{"ca file", "no such file"}},
		{"ca not pem", Config{URL: "mqtts://broker", CAFile: notPEM}, []string{"no PEM certificate"}},
		{"cert without key", Config{URL: "mqtts://broker", CertFile: p.clientCert}, []string{"go together"}},
		{"key mismatch", Config{URL: "mqtts://broker", CertFile: p.clientCert, KeyFile: notPEM}, []string{"client certificate"}},
		{"presence without id", Config{URL: "mqtt://b", PresenceTopic: "a/_gateways/x/status"}, []string{"needs a gateway id"}},
		{"presence wildcard", Config{URL: "mqtt://b", GatewayID: "g", PresenceTopic: "a/+/status"}, []string{"wildcards"}},
		{"keepalive", Config{URL: "mqtt://b", KeepAlive: 100 * time.Millisecond}, []string{"keepalive"}},
		{"negative timeout", Config{URL: "mqtt://b", ConnectTimeout: -time.Second}, []string{"connect timeout must not be negative"}},
		{"backoff order", Config{URL: "mqtt://b", BackoffMin: time.Minute, BackoffMax: time.Second}, []string{"backoff max"}},
		{"inflight", Config{URL: "mqtt://b", MaxInflight: 70000}, []string{"max inflight"}},
		{"all at once", Config{URL: "ftp://", MaxInflight: -1, PresenceTopic: "x"}, []string{"unsupported scheme", "max inflight", "gateway id"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.cfg)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if s.Name() != "mqtt" || s.cfg.MaxInflight != 1000 || s.cfg.KeepAlive != 30*time.Second || s.cfg.ClientID == "" {
					t.Fatalf("defaults not applied: %+v", s.cfg.Config)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			if !errorsIs(err, ErrConfig) {
				t.Fatalf("%v does not wrap ErrConfig", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}
