package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/unsgate/unsgate/connectors"
)

// The PKI directory layout (under Config.PKIDir).
const (
	ownCertPath     = "own/cert.der"
	ownKeyPath      = "own/private/key.pem"
	trustedDirName  = "trusted"
	rejectedDirName = "rejected"
)

// Properties of the created application instance certificate.
const (
	ownKeyBits  = 2048
	ownValidity = 5 * 365 * 24 * time.Hour
	// Backdated so a server whose clock is a little behind accepts it.
	ownBackdate = time.Hour
)

// identity is the gateway's application instance certificate and key.
type identity struct {
	cert       []byte // DER; the leaf, possibly followed by its chain
	leaf       *x509.Certificate
	key        *rsa.PrivateKey
	certFile   string // absolute path, named in errors for the server's administrator
	uri        string // application URI from the certificate's SubjectAltName
	thumbprint string
}

// identityMu serializes creating identities, so two sources sharing a
// PKIDir in one process end up with the same one.
var identityMu sync.Mutex

// loadIdentity returns the configured certificate and key (CertFile,
// KeyFile), or the one kept in PKIDir/own, creating it on first use.
func loadIdentity(cfg *Config, log *slog.Logger) (*identity, error) {
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		id, err := readIdentity(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", connectors.ErrConfig, err)
		}
		warnURI(cfg, id, log)
		return id, nil
	}
	if cfg.PKIDir == "" {
		return nil, fmt.Errorf("%w: a secured connection needs the gateway's certificate: set pki_dir (where it is created) or cert_file and key_file", connectors.ErrConfig)
	}
	identityMu.Lock()
	defer identityMu.Unlock()
	id, created, err := ownIdentity(cfg.PKIDir, defaultApplicationURI(cfg))
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("opcua: created the gateway's application certificate; servers that check client certificates must trust it once",
			"source", cfg.Name, "cert_file", id.certFile, "thumbprint", id.thumbprint, "application_uri", id.uri)
	}
	warnURI(cfg, id, log)
	return id, nil
}

// uriWarned holds the certificate file and configured URI pairs warned
// about, so reconnects do not repeat it.
var uriWarned sync.Map

// warnURI tells once about an application_uri that the certificate does
// not carry: servers compare the session's URI with the certificate's, so
// the certificate's wins.
func warnURI(cfg *Config, id *identity, log *slog.Logger) {
	if cfg.ApplicationURI != "" && id.uri != "" && cfg.ApplicationURI != id.uri {
		if _, seen := uriWarned.LoadOrStore(id.certFile+"\x00"+cfg.ApplicationURI, true); seen {
			return
		}
		log.Warn("opcua: application_uri differs from the URI in the gateway's certificate; using the certificate's (delete the created certificate to make one with the new URI, which servers must then trust again)",
			"source", cfg.Name, "application_uri", cfg.ApplicationURI, "certificate_uri", id.uri, "cert_file", id.certFile)
	}
}

func defaultApplicationURI(cfg *Config) string {
	if cfg.ApplicationURI != "" {
		return cfg.ApplicationURI
	}
	name := cfg.Name
	if name == "" {
		name = "gateway"
	}
	return "urn:unsgate:" + ownHostname() + ":" + name
}

func ownHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// ownIdentity loads or creates PKIDir/own. The key is created first and
// the certificate from it, each written atomically, so a crash leaves
// either nothing, a key (the certificate is made from it at the next
// start), or both; never half a file.
func ownIdentity(dir, uri string) (id *identity, created bool, err error) {
	keyFile, err := filepath.Abs(filepath.Join(dir, ownKeyPath))
	if err != nil {
		return nil, false, fmt.Errorf("gateway identity: %w", err)
	}
	certFile := filepath.Join(filepath.Dir(filepath.Dir(keyFile)), filepath.Base(ownCertPath))

	key, err := readKeyFile(keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if key, err = createKey(keyFile); err != nil {
			return nil, false, fmt.Errorf("gateway identity: %w", err)
		}
	case errors.Is(err, os.ErrPermission):
		return nil, false, fmt.Errorf("gateway identity: %w (the gateway must run as the user that owns it)", err)
	case err != nil:
		return nil, false, fmt.Errorf("gateway identity: %w (to start over, delete it and %s: a new key and certificate are then created, which servers must trust again)", err, certFile)
	}

	der, err := os.ReadFile(certFile)
	if errors.Is(err, os.ErrNotExist) {
		der, created, err = createCert(certFile, key, uri)
	}
	if err != nil {
		return nil, false, fmt.Errorf("gateway identity: %w", err)
	}
	id, err = newIdentity(der, key, certFile, keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("gateway identity: %w (delete %s to create a new certificate from the key; servers must then trust the new one)", err, certFile)
	}
	if now := time.Now(); now.After(id.leaf.NotAfter) {
		return nil, false, fmt.Errorf("gateway identity: the gateway's certificate %s expired on %s; delete it to create a new one (servers must then trust the new one)", certFile, id.leaf.NotAfter.Format(time.DateOnly))
	}
	return id, created, nil
}

func createKey(file string) (*rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, ownKeyBits)
	if err != nil {
		return nil, fmt.Errorf("create private key: %w", err)
	}
	// PKCS #1, the form most OPC UA tools (and gopcua's loader) read.
	data := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// own/ holds the certificate, which is public; own/private only the owner reads.
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(file)), 0o755); err != nil {
		return nil, fmt.Errorf("create private key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, fmt.Errorf("create private key: %w", err)
	}
	created, err := writeNew(file, data, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create private key: %w", err)
	}
	if !created {
		// Another process made one first: use that.
		return readKeyFile(file)
	}
	return key, nil
}

func createCert(file string, key *rsa.PrivateKey, uri string) (der []byte, created bool, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, false, fmt.Errorf("create certificate: application URI %q is not a URI (e.g. urn:unsgate:host:name)", uri)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, false, fmt.Errorf("create certificate: %w", err)
	}
	host := ownHostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "unsgate@" + host,
			Organization: []string{"unsgate"},
		},
		NotBefore:             now.Add(-ownBackdate),
		NotAfter:              now.Add(ownValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{host},
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, false, fmt.Errorf("create certificate: %w", err)
	}
	created, err = writeNew(file, der, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("create certificate: %w", err)
	}
	if !created {
		der, err = os.ReadFile(file)
		return der, false, err
	}
	return der, true, nil
}

// writeNew writes data to file unless it exists: a temporary file is
// written and synced, then linked to the final name (which fails when the
// name exists), so the name never refers to a partly written file.
// created is false when the file existed.
func writeNew(file string, data []byte, perm os.FileMode) (created bool, err error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), file); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		// A file system without hard links: rename, which is atomic too
		// but may replace a file created at the same moment.
		if _, serr := os.Lstat(file); serr == nil {
			return false, nil
		}
		if err := os.Rename(tmp.Name(), file); err != nil {
			return false, err
		}
	}
	syncDir(dir)
	return true, nil
}

// writeReplace writes data to file atomically (temporary file, rename).
func writeReplace(file string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: the data itself is synced
		d.Close()
	}
}

// readIdentity reads a configured certificate and key (PEM or DER each)
// and checks that they belong together.
func readIdentity(certFile, keyFile string) (*identity, error) {
	switch {
	case certFile == "":
		return nil, fmt.Errorf("key_file %s is set but cert_file is not; set both", keyFile)
	case keyFile == "":
		return nil, fmt.Errorf("cert_file %s is set but key_file is not; set both", certFile)
	}
	if abs, err := filepath.Abs(certFile); err == nil {
		certFile = abs
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file: %w", err)
	}
	der, err := certDER(data)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s: %w", certFile, err)
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	id, err := newIdentity(der, key, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if now := time.Now(); now.After(id.leaf.NotAfter) || now.Before(id.leaf.NotBefore) {
		return nil, fmt.Errorf("cert_file %s is valid from %s to %s, not now", certFile, id.leaf.NotBefore.Format(time.DateOnly), id.leaf.NotAfter.Format(time.DateOnly))
	}
	return id, nil
}

func newIdentity(der []byte, key *rsa.PrivateKey, certFile, keyFile string) (*identity, error) {
	certs, err := x509.ParseCertificates(der)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("certificate %s: not an X.509 certificate: %v", certFile, err)
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate %s: OPC UA needs an RSA key, this certificate has %T", certFile, leaf.PublicKey)
	}
	if !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("the private key %s does not belong to the certificate %s", keyFile, certFile)
	}
	id := &identity{cert: der, leaf: leaf, key: key, certFile: certFile, thumbprint: sha1Hex(leaf.Raw)}
	if len(leaf.URIs) > 0 {
		id.uri = leaf.URIs[0].String()
	}
	return id, nil
}

// certDER returns the DER of a certificate file's content: DER as is, or
// every CERTIFICATE block of a PEM file concatenated (leaf first).
func certDER(data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		if _, err := x509.ParseCertificates(data); err != nil {
			return nil, fmt.Errorf("neither PEM nor a DER certificate: %w", err)
		}
		return data, nil
	}
	var der []byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			der = append(der, b.Bytes...)
		}
	}
	if der == nil {
		return nil, errors.New("no CERTIFICATE block in this PEM file")
	}
	if _, err := x509.ParseCertificates(der); err != nil {
		return nil, err
	}
	return der, nil
}

// readKeyFile reads an RSA private key: PEM (PKCS #1 or PKCS #8,
// unencrypted) or DER of either.
func readKeyFile(file string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	der := data
	if bytes.Contains(data, []byte("-----BEGIN")) {
		b, _ := pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("private key %s: bad PEM", file)
		}
		if strings.Contains(b.Type, "ENCRYPTED") || b.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("private key %s is encrypted; give an unencrypted key (protect it with file permissions)", file)
		}
		der = b.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key %s: not a PKCS #1 or PKCS #8 RSA key", file)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s: OPC UA needs an RSA key, this is %T", file, k)
	}
	return rk, nil
}

// thumbprint is the SHA-1 of a certificate's DER in lower-case hex, the
// form OPC UA tools show.
func sha1Hex(der []byte) string {
	sum := sha1.Sum(der)
	return hex.EncodeToString(sum[:])
}

// Errors of the certificate checks, for errors.Is; the messages around them
// say what to do.
var (
	// ErrServerCertUntrusted: the server's certificate is not in the
	// trusted directory (or is not valid now). Retrying helps once the
	// certificate is moved into the trusted directory.
	ErrServerCertUntrusted = errors.New("the server's certificate is not trusted")
	// ErrGatewayCertRejected: the server refused the gateway's certificate;
	// its administrator has to trust it.
	ErrGatewayCertRejected = errors.New("the server refused the gateway's certificate")
	// ErrUserRejected: the server refused the user name or password (or
	// anonymous access).
	ErrUserRejected = errors.New("the server refused the login")
)

// checkServerCert decides whether to trust a server certificate (DER, the
// leaf possibly followed by its chain): trusted when PKIDir/trusted holds
// the certificate itself or a CA certificate that issued it, and it is
// valid now. The trusted directory is read at every call, so moving a file
// in takes effect at the next connect. An unknown certificate is written to
// PKIDir/rejected for the user to move.
func checkServerCert(dir string, der []byte, now time.Time, log *slog.Logger) error {
	certs, err := x509.ParseCertificates(der)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("%w: it cannot be parsed: %v", ErrServerCertUntrusted, err)
	}
	leaf := certs[0]
	thumb := sha1Hex(leaf.Raw)
	trusted := readTrusted(filepath.Join(dir, trustedDirName), log)

	known := slices.ContainsFunc(trusted, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, leaf.Raw) })
	if !known && len(trusted) > 0 {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, c := range trusted {
			roots.AddCert(c)
		}
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		known = verr == nil
	}
	if known {
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return fmt.Errorf("%w: %q (SHA-1 thumbprint %s) is valid from %s to %s, not now: the server needs a new certificate (or check the clocks)",
				ErrServerCertUntrusted, leaf.Subject.String(), thumb, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}

	name := certFileName(leaf, thumb)
	rejected := filepath.Join(dir, rejectedDirName, name)
	if abs, err := filepath.Abs(rejected); err == nil {
		rejected = abs
	}
	trustAt := filepath.Join(filepath.Dir(filepath.Dir(rejected)), trustedDirName, name)
	saved := "saved as " + rejected
	if err := os.MkdirAll(filepath.Dir(rejected), 0o755); err != nil {
		saved = "could not be saved (" + err.Error() + ")"
	} else if prev, err := os.ReadFile(rejected); err != nil || !bytes.Equal(prev, leaf.Raw) {
		// (Else an earlier attempt saved it: the Supervisor retries.)
		if err := writeReplace(rejected, leaf.Raw, 0o644); err != nil {
			saved = "could not be saved (" + err.Error() + ")"
		}
	}
	return fmt.Errorf("%w: subject %q, SHA-1 thumbprint %s, %s; if this is the server you expect, move it to %s (the next connect uses it, no restart needed)",
		ErrServerCertUntrusted, leaf.Subject.String(), thumb, saved, trustAt)
}

// certFileName is "<subject CN>[<thumbprint>].der" with the CN reduced to
// characters that are safe in file names.
func certFileName(c *x509.Certificate, thumb string) string {
	cn := c.Subject.CommonName
	if cn == "" {
		cn = "server"
	}
	safe := []rune(cn)
	for i, r := range safe {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@ ", r)) {
			safe[i] = '_'
		}
	}
	s := strings.TrimLeft(string(safe), ".")
	if len(s) > 64 {
		s = s[:64]
	}
	return s + "[" + thumb + "].der"
}

// readTrusted parses every certificate in the trusted directory (*.der,
// *.crt, *.cer, *.pem; PEM or DER content). Unreadable files are logged
// and skipped: one bad file must not make every server untrusted.
func readTrusted(dir string, log *slog.Logger) []*x509.Certificate {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("opcua: cannot read the trusted certificates directory", "dir", dir, "err", err)
		}
		return nil
	}
	var out []*x509.Certificate
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".der", ".crt", ".cer", ".pem":
		default:
			continue
		}
		if e.IsDir() {
			continue
		}
		file := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(file)
		if err == nil {
			var der []byte
			if der, err = certDER(data); err == nil {
				var cs []*x509.Certificate
				if cs, err = x509.ParseCertificates(der); err == nil {
					out = append(out, cs...)
					continue
				}
			}
		}
		log.Warn("opcua: skipping a file in the trusted certificates directory", "file", file, "err", err)
	}
	return out
}
