package kafka

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

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/unsgate/unsgate/publish"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a
// client certificate, as PEM files.
type pki struct {
	caFile                string
	pool                  *x509.CertPool
	server                tls.Certificate
	clientCert, clientKey string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	dir := t.TempDir()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write(p.caFile, "CERTIFICATE", caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := issue(2, "kafka", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliDER, cliKey := issue(3, "gw1", x509.ExtKeyUsageClientAuth, nil)
	p.clientCert, p.clientKey = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	write(p.clientCert, "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	write(p.clientKey, "EC PRIVATE KEY", keyDER)
	return p
}

// TLS with a private CA and a required client certificate against kfake's
// TLS listener; a wrong CA connects nowhere and says why.
func TestTLSWithClientCertificate(t *testing.T) {
	p := newPKI(t, "good")
	c := startCluster(t, kfake.SeedTopics(2, DefaultTopic), kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}))
	cfg := testConfig(addrs(c)...)
	cfg.TLS, cfg.CAFile, cfg.CertFile, cfg.KeyFile = true, p.caFile, p.clientCert, p.clientKey
	s := newSink(t, cfg)
	q := publish.NewQueue(100)
	msgs := values(tags("acme/munich/bottling/line1", 3), 0, 12)
	q.PushBatch(msgs)
	runSink(t, s, q)
	waitFor(t, "delivery over TLS", 10*time.Second, func() bool { return s.Status().Sent == 12 })

	pair, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	recs := consume(t, addrs(c), DefaultTopic, 12, 10*time.Second,
		kgo.DialTLSConfig(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
	checkOrder(t, msgs, recs)

	other := newPKI(t, "other")
	cfg.CAFile = other.caFile
	bad := newSink(t, cfg)
	q2 := publish.NewQueue(100)
	q2.PushBatch(msgs[:2])
	runSink(t, bad, q2)
	waitFor(t, "a certificate error", 10*time.Second, func() bool { return bad.Status().LastError != "" })
	if st := bad.Status(); st.Connected || st.Sent != 0 || !strings.Contains(st.LastError, "ca_file") {
		t.Errorf("with the wrong CA: status %+v", st)
	}
}

// SASL PLAIN and both SCRAMs against kfake's SASL; a wrong password is
// refused and the error names what to check.
func TestSASL(t *testing.T) {
	for _, mech := range Mechanisms {
		t.Run(mech, func(t *testing.T) {
			c := startCluster(t, kfake.SeedTopics(2, DefaultTopic), kfake.EnableSASL(), kfake.Superuser(mech, "gateway", "s3cret"))
			cfg := testConfig(addrs(c)...)
			cfg.SASL = SASL{Mechanism: strings.ToLower(mech), Username: "gateway", Password: "s3cret"}
			s := newSink(t, cfg)
			q := publish.NewQueue(100)
			msgs := values(tags("acme/munich/bottling/line1", 2), 0, 6)
			q.PushBatch(msgs)
			runSink(t, s, q)
			waitFor(t, "delivery with SASL", 10*time.Second, func() bool { return s.Status().Sent == 6 })
			var opt kgo.Opt
			switch mech {
			case "PLAIN":
				opt = kgo.SASL(plain.Auth{User: "gateway", Pass: "s3cret"}.AsMechanism())
			case "SCRAM-SHA-256":
				opt = kgo.SASL(scram.Auth{User: "gateway", Pass: "s3cret"}.AsSha256Mechanism())
			default:
				opt = kgo.SASL(scram.Auth{User: "gateway", Pass: "s3cret"}.AsSha512Mechanism())
			}
			checkOrder(t, msgs, consume(t, addrs(c), DefaultTopic, 6, 10*time.Second, opt))

			cfg.SASL.Password = "wrong"
			bad := newSink(t, cfg)
			q2 := publish.NewQueue(100)
			q2.PushBatch(msgs[:2])
			runSink(t, bad, q2)
			waitFor(t, "an authentication error", 10*time.Second, func() bool { return bad.Status().LastError != "" })
			if st := bad.Status(); st.Sent != 0 || !strings.Contains(st.LastError, "check sasl") {
				t.Errorf("with a wrong password: status %+v", st)
			}
		})
	}
}
