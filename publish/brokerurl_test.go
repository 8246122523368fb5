package publish

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBrokerURL(t *testing.T) {
	for _, c := range []struct {
		raw      string
		tls      BrokerTLS
		host     string // u.Host; "" when the URL is refused
		secure   bool
		wantErrs []string
	}{
		{raw: "mqtt://broker", host: "broker:1883"},
		{raw: "tcp://10.0.0.1:1884", host: "10.0.0.1:1884"},
		{raw: "MQTTS://broker", host: "broker:8883", secure: true},
		{raw: "ssl://broker:9883", tls: BrokerTLS{InsecureSkipVerify: true}, host: "broker:9883", secure: true},
		{raw: "", wantErrs: []string{"url is required"}},
		{raw: "http://broker", wantErrs: []string{`unsupported scheme "http"`}},
		{raw: "mqtt://:1883", wantErrs: []string{"missing host"}},
		{raw: "mqtt://user:secret@broker", wantErrs: []string{"credentials in the URL are not supported"}},
		{raw: "mqtt://broker/x?y", wantErrs: []string{"unexpected path, query or fragment"}},
		{raw: "mqtt://broker", tls: BrokerTLS{CAFile: "ca.pem"}, wantErrs: []string{"need an mqtts:// URL"}},
		{raw: "mqtts://broker", tls: BrokerTLS{CertFile: "c.pem"}, wantErrs: []string{"cert file and key file go together"}},
	} {
		u, tc, errs := ParseBrokerURL(c.raw, c.tls)
		err := errors.Join(errs...)
		for _, w := range c.wantErrs {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %v, want %q", c.raw, err, w)
			}
		}
		if len(c.wantErrs) == 0 && err != nil {
			t.Errorf("%q: %v", c.raw, err)
		}
		if c.host == "" {
			continue
		}
		if u == nil || u.Host != c.host || (tc != nil) != c.secure {
			t.Errorf("%q: url %v, tls %v; want host %s, tls %v", c.raw, u, tc != nil, c.host, c.secure)
		}
		if tc != nil && (tc.ServerName != u.Hostname() || tc.InsecureSkipVerify != c.tls.InsecureSkipVerify) {
			t.Errorf("%q: tls server name %q skip %v", c.raw, tc.ServerName, tc.InsecureSkipVerify)
		}
	}
	// The password never appears in the error.
	_, _, errs := ParseBrokerURL("mqtt://user:secret@broker", BrokerTLS{})
	if err := errors.Join(errs...); strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the password: %v", err)
	}
}
