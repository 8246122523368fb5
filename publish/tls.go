package publish

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// LoadClientTLS adds to t what a sink's TLS settings name: caFile (PEM)
// as the roots that verify the server, certFile and keyFile (both or
// neither) as the client certificate. Every problem is reported at once;
// t is changed only by what loaded.
func LoadClientTLS(t *tls.Config, caFile, certFile, keyFile string) error {
	var errs []error
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("ca file: %w", err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("ca file %s: no PEM certificate found", caFile))
			}
			t.RootCAs = pool
		}
	}
	switch {
	case (certFile == "") != (keyFile == ""):
		errs = append(errs, errors.New("cert file and key file go together: set both or neither"))
	case certFile != "":
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("client certificate %s / %s: %w", certFile, keyFile, err))
		} else {
			t.Certificates = []tls.Certificate{pair}
		}
	}
	return errors.Join(errs...)
}
