package publish

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// BrokerTLS is what an MQTT sink's config says about TLS: the files
// LoadClientTLS loads, and whether to skip verifying the broker (tests).
type BrokerTLS struct {
	CAFile, CertFile, KeyFile string
	InsecureSkipVerify        bool
}

// ParseBrokerURL checks the URL of an MQTT broker, as every MQTT sink takes
// it: mqtt://host[:1883] or mqtts://host[:8883] (tcp:// for mqtt://,
// ssl:// and tls:// for mqtts://), without credentials, path, query or
// fragment. It returns the URL with its port filled in and, for mqtts://,
// the TLS config (TLS 1.2 or newer, the broker's host name to verify, t's
// files loaded); TLS settings with a plain URL are a mistake. Every problem
// is returned.
func ParseBrokerURL(raw string, t BrokerTLS) (*url.URL, *tls.Config, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if raw == "" {
		bad("url is required (mqtt://host:1883 or mqtts://host:8883)")
		return nil, nil, errs
	}
	u, err := url.Parse(raw)
	if err != nil {
		bad("url %q: %v", raw, err)
		return nil, nil, errs
	}
	port, secure := "", false
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port, secure = "8883", true
	default:
		bad("url %q: unsupported scheme %q (want mqtt:// or mqtts://)", raw, u.Scheme)
	}
	switch {
	case u.Hostname() == "":
		bad("url %q: missing host", raw)
	case u.User != nil:
		c := *u
		c.User = nil
		bad("url %q: credentials in the URL are not supported; set username and password", c.String())
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		bad("url %q: unexpected path, query or fragment", raw)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if !secure {
		if t != (BrokerTLS{}) {
			bad("TLS settings (ca_file, cert_file, key_file, insecure_skip_verify) need an mqtts:// URL, got %q", raw)
		}
		return u, nil, errs
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         u.Hostname(),
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit opt-in, documented as test-only
	}
	if err := LoadClientTLS(tc, t.CAFile, t.CertFile, t.KeyFile); err != nil {
		errs = append(errs, err)
	}
	return u, tc, errs
}

// DialBroker opens the connection to a broker at host (host:port, as
// ParseBrokerURL returns it): TCP, then the TLS handshake when t is not
// nil, both within timeout.
func DialBroker(ctx context.Context, host string, t *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return c, nil
	}
	tc := tls.Client(c, t)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}
