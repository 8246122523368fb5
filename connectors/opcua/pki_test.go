package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unsgate/unsgate/connectors"
)

func secLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestOwnIdentityCreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{Name: "ua1", PKIDir: dir}
	rec := &secRecorder{}
	first, err := loadIdentity(cfg, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "own", "cert.der")
	keyFile := filepath.Join(dir, "own", "private", "key.pem")
	if first.certFile != certFile {
		t.Errorf("certFile = %q, want %q", first.certFile, certFile)
	}
	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	der, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("cert.der is not one DER certificate: %v", err)
	}
	host, _ := os.Hostname()
	wantURI := "urn:unsgate:" + host + ":ua1"
	switch {
	case len(cert.URIs) != 1 || cert.URIs[0].String() != wantURI:
		t.Errorf("URIs = %v, want [%s]", cert.URIs, wantURI)
	case len(cert.DNSNames) != 1 || cert.DNSNames[0] != host:
		t.Errorf("DNSNames = %v, want [%s]", cert.DNSNames, host)
	case cert.SignatureAlgorithm != x509.SHA256WithRSA:
		t.Errorf("signature %v, want SHA256-RSA", cert.SignatureAlgorithm)
	case cert.PublicKey.(*rsa.PublicKey).N.BitLen() != 2048:
		t.Errorf("key size %d, want 2048", cert.PublicKey.(*rsa.PublicKey).N.BitLen())
	case cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment|x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment:
		t.Errorf("key usage %b", cert.KeyUsage)
	case len(cert.ExtKeyUsage) != 2:
		t.Errorf("extended key usage %v, want client and server auth", cert.ExtKeyUsage)
	case cert.NotAfter.Sub(cert.NotBefore) < 4*365*24*time.Hour || time.Now().Before(cert.NotBefore):
		t.Errorf("validity %v .. %v", cert.NotBefore, cert.NotAfter)
	case first.uri != wantURI:
		t.Errorf("identity uri %q", first.uri)
	}
	pemData, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(pemData); b == nil || b.Type != "RSA PRIVATE KEY" {
		t.Errorf("key.pem is not a PKCS #1 PEM key")
	}

	// A second start (another source name, same directory) reuses it.
	second, err := loadIdentity(&Config{Name: "other", PKIDir: dir}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	// The creation is logged once, with what to hand to server administrators.
	if n := len(rec.lines); n != 1 || !strings.Contains(rec.lines[0], "created the gateway's application certificate") ||
		!strings.Contains(rec.lines[0], certFile) || !strings.Contains(rec.lines[0], first.thumbprint) {
		t.Errorf("logs %q, want one line about the created certificate", rec.lines)
	}
	if second.thumbprint != first.thumbprint || !bytes.Equal(second.cert, first.cert) || !second.key.Equal(first.key) {
		t.Errorf("second start made a new identity: %s, first %s", second.thumbprint, first.thumbprint)
	}
	// No temporary files left behind.
	for _, d := range []string{filepath.Dir(certFile), filepath.Dir(keyFile)} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Errorf("temporary file left: %s", filepath.Join(d, e.Name()))
			}
		}
	}
}

func TestOwnIdentityConfiguredURI(t *testing.T) {
	id, err := loadIdentity(&Config{Name: "ua1", PKIDir: t.TempDir(), ApplicationURI: "urn:acme:munich:gw1"}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	if id.uri != "urn:acme:munich:gw1" || id.leaf.URIs[0].String() != "urn:acme:munich:gw1" {
		t.Errorf("uri %q, certificate %v", id.uri, id.leaf.URIs)
	}
}

func TestOwnIdentityConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	thumbs := make([]string, 4)
	errs := make([]error, 4)
	for i := range thumbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
			errs[i] = err
			if err == nil {
				thumbs[i] = id.thumbprint
			}
		}()
	}
	wg.Wait()
	for i := range thumbs {
		if errs[i] != nil || thumbs[i] != thumbs[0] {
			t.Fatalf("start %d: %v %s, start 0: %s", i, errs[i], thumbs[i], thumbs[0])
		}
	}
}

// A crash after the key was written but before the certificate: the next
// start makes the certificate from the same key.
func TestOwnIdentityKeyWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	first, err := loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(first.certFile); err != nil {
		t.Fatal(err)
	}
	again, err := loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	if !again.key.Equal(first.key) {
		t.Error("the key was replaced")
	}
	if again.thumbprint == first.thumbprint {
		t.Error("no new certificate was made")
	}
}

func TestOwnIdentityForeignKey(t *testing.T) {
	dir := t.TempDir()
	first, err := loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	keyFile := filepath.Join(dir, "own", "private", "key.pem")
	secWrite(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)}))
	_, err = loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), first.certFile) {
		t.Fatalf("err = %v, want one naming %s and %s", err, keyFile, first.certFile)
	}
	// The files are left alone for the user to decide.
	if got, _ := os.ReadFile(first.certFile); !bytes.Equal(got, first.cert) {
		t.Error("the certificate was overwritten")
	}
}

func TestConfiguredIdentity(t *testing.T) {
	dir := t.TempDir()
	key, certDERBytes := secCert(t, "gw", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), nil, nil)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	files := map[string][]byte{
		"cert.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDERBytes}),
		"cert.der":  certDERBytes,
		"key1.pem":  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"key8.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		"key1.der":  x509.MarshalPKCS1PrivateKey(key),
		"enc.pem":   pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"junk.pem":  []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
		"wrong.pem": nil,
	}
	wrong, _ := rsa.GenerateKey(rand.Reader, 1024)
	files["wrong.pem"] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(wrong)})
	for name, data := range files {
		secWrite(t, filepath.Join(dir, name), data)
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	for _, tc := range []struct{ cert, key string }{{"cert.pem", "key1.pem"}, {"cert.der", "key8.pem"}, {"cert.pem", "key1.der"}} {
		id, err := loadIdentity(&Config{CertFile: p(tc.cert), KeyFile: p(tc.key)}, secLog())
		if err != nil {
			t.Errorf("%s + %s: %v", tc.cert, tc.key, err)
			continue
		}
		if !bytes.Equal(id.cert, certDERBytes) || id.certFile != p(tc.cert) {
			t.Errorf("%s + %s: wrong certificate or file %s", tc.cert, tc.key, id.certFile)
		}
	}
	for _, tc := range []struct{ cert, key, want string }{
		{"cert.pem", "wrong.pem", p("wrong.pem")},
		{"cert.pem", "enc.pem", "encrypted"},
		{"junk.pem", "key1.pem", p("junk.pem")},
		{"missing.der", "key1.pem", p("missing.der")},
		{"cert.pem", "missing.pem", p("missing.pem")},
		{"cert.pem", "", "key_file"},
	} {
		_, err := loadIdentity(&Config{CertFile: p(tc.cert), KeyFile: tc.key}, secLog())
		if tc.key != "" {
			_, err = loadIdentity(&Config{CertFile: p(tc.cert), KeyFile: p(tc.key)}, secLog())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, connectors.ErrConfig) {
			t.Errorf("%s + %s: err = %v, want a configuration error naming %q", tc.cert, tc.key, err, tc.want)
		}
	}
}

func TestCheckServerCertTrust(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	_, der := secCert(t, "Line2 Server/PLC", now.Add(-time.Hour), now.Add(time.Hour), nil, nil)
	thumb := sha1Hex(der)

	err := checkServerCert(dir, der, now, secLog())
	if !errors.Is(err, ErrServerCertUntrusted) || errors.Is(err, connectors.ErrConfig) {
		t.Fatalf("err = %v, want ErrServerCertUntrusted (and not a configuration error)", err)
	}
	name := "Line2 Server_PLC[" + thumb + "].der"
	rejected := filepath.Join(dir, "rejected", name)
	trusted := filepath.Join(dir, "trusted", name)
	for _, want := range []string{thumb, "CN=Line2 Server/PLC", rejected, trusted} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if got, err := os.ReadFile(rejected); err != nil || !bytes.Equal(got, der) {
		t.Fatalf("rejected file: %v", err)
	}
	// A second refusal rewrites the same file.
	if err := checkServerCert(dir, der, now, secLog()); !errors.Is(err, ErrServerCertUntrusted) {
		t.Fatal(err)
	}

	// Moving the file into trusted/ trusts it, read again at the next check.
	if err := os.MkdirAll(filepath.Dir(trusted), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rejected, trusted); err != nil {
		t.Fatal(err)
	}
	if err := checkServerCert(dir, der, now, secLog()); err != nil {
		t.Fatalf("after moving to trusted: %v", err)
	}
	// A trusted certificate is still checked for its dates.
	err = checkServerCert(dir, der, now.Add(2*time.Hour), secLog())
	if !errors.Is(err, ErrServerCertUntrusted) || !strings.Contains(err.Error(), "not now") {
		t.Errorf("expired: err = %v", err)
	}
}

func TestCheckServerCertTrustedFormsAndIssuers(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	caKey, caDER := secCert(t, "Plant CA", now.Add(-time.Hour), now.Add(time.Hour), nil, nil)
	ca, _ := x509.ParseCertificate(caDER)
	_, leafDER := secCert(t, "server-by-ca", now.Add(-time.Hour), now.Add(time.Hour), ca, caKey)
	_, pemServer := secCert(t, "pem-server", now.Add(-time.Hour), now.Add(time.Hour), nil, nil)
	_, otherDER := secCert(t, "stranger", now.Add(-time.Hour), now.Add(time.Hour), nil, nil)

	secWrite(t, filepath.Join(dir, "trusted", "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	secWrite(t, filepath.Join(dir, "trusted", "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pemServer}))
	secWrite(t, filepath.Join(dir, "trusted", "broken.der"), []byte("not a certificate"))
	secWrite(t, filepath.Join(dir, "trusted", "README.txt"), []byte("ignored"))

	if err := checkServerCert(dir, leafDER, now, secLog()); err != nil {
		t.Errorf("certificate issued by a trusted CA: %v", err)
	}
	if err := checkServerCert(dir, append(append([]byte{}, leafDER...), caDER...), now, secLog()); err != nil {
		t.Errorf("chain leaf+CA: %v", err)
	}
	if err := checkServerCert(dir, pemServer, now, secLog()); err != nil {
		t.Errorf("certificate trusted as PEM: %v", err)
	}
	if err := checkServerCert(dir, otherDER, now, secLog()); !errors.Is(err, ErrServerCertUntrusted) {
		t.Errorf("unknown certificate: %v", err)
	}
	if err := checkServerCert(dir, []byte("garbage"), now, secLog()); !errors.Is(err, ErrServerCertUntrusted) {
		t.Errorf("unparsable certificate: %v", err)
	}
}

func TestCertFileName(t *testing.T) {
	for cn, want := range map[string]string{
		"NodeOPCUA-Server@host": "NodeOPCUA-Server@host[ab].der",
		"../../etc/passwd":      "_.._etc_passwd[ab].der",
		"":                      "server[ab].der",
		"a:b*c?":                "a_b_c_[ab].der",
	} {
		got := certFileName(&x509.Certificate{Subject: pkix.Name{CommonName: cn}}, "ab")
		if got != want {
			t.Errorf("certFileName(%q) = %q, want %q", cn, got, want)
		}
		if strings.ContainsAny(got, `/\`) {
			t.Errorf("certFileName(%q) = %q has a path separator", cn, got)
		}
	}
}

// secCert makes an RSA certificate for tests: self-signed, or issued by
// parent/parentKey when given. CN "Plant CA" is made a CA.
func secCert(t testing.TB, cn string, from, to time.Time, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*rsa.PrivateKey, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"test"}},
		NotBefore:             from,
		NotAfter:              to,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	if cn == "Plant CA" {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func secWrite(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The gateway's certificate keeps the URI it was made with (servers trust
// that certificate); a different application_uri later (e.g. a new host
// name) is told once, not at every reconnect.
func TestOwnIdentityURIChangedWarnsOnce(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadIdentity(&Config{Name: "ua", PKIDir: dir, ApplicationURI: "urn:unsgate:oldhost:gw"}, secLog()); err != nil {
		t.Fatal(err)
	}
	rec := &secRecorder{}
	for range 3 {
		id, err := loadIdentity(&Config{Name: "ua", PKIDir: dir, ApplicationURI: "urn:unsgate:newhost:gw"}, slog.New(rec))
		if err != nil {
			t.Fatal(err)
		}
		if id.uri != "urn:unsgate:oldhost:gw" {
			t.Fatalf("uri %q, want the certificate's", id.uri)
		}
	}
	if len(rec.lines) != 1 || !strings.Contains(rec.lines[0], "urn:unsgate:oldhost:gw") || !strings.Contains(rec.lines[0], "urn:unsgate:newhost:gw") ||
		!strings.Contains(rec.lines[0], filepath.Join(dir, "own", "cert.der")) {
		t.Fatalf("logs %q, want one warning naming both URIs and the certificate file", rec.lines)
	}
}

// A damaged key in pki_dir/own (a disk error, a hand edit): the error names
// the file and says how to get a working identity again.
func TestOwnIdentityDamagedKey(t *testing.T) {
	dir := t.TempDir()
	first, err := loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "own", "private", "key.pem")
	secWrite(t, keyFile, []byte("-----BEGIN RSA PRIVATE KEY-----\ntruncated"))
	_, err = loadIdentity(&Config{Name: "ua", PKIDir: dir}, secLog())
	if err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "delete") || !strings.Contains(err.Error(), first.certFile) {
		t.Fatalf("err = %v, want one naming %s, what to delete and %s", err, keyFile, first.certFile)
	}
}
