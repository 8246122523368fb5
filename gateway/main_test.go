package gateway

import (
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"

	"github.com/unsgate/unsgate/model"
)

// gopcua's server (the simulated OPC UA server of the demo and the tests)
// prints its node set import with the standard logger; the gateway logs
// through slog only, so the standard logger is silenced for the tests.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// buildGateway is New on a config text (gw.yaml in a temporary folder,
// ${VAR} from vars) and a model text (m.yaml); it fails the test on any
// error. The caller runs it or closes its fan-out.
func buildGateway(t testing.TB, cfgText, modelText string, vars map[string]string) (*Config, *Gateway) {
	t.Helper()
	cfg, err := ParseConfig(filepath.Join(t.TempDir(), "gw.yaml"), []byte(cfgText), env(vars))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	m, err := model.LoadFiles([]model.File{{Name: "m.yaml", Data: []byte(modelText)}})
	if err != nil {
		t.Fatalf("model: %v", err)
	}
	m, plan, err := CompileModel(cfg, m)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	g, err := New(cfg, m, plan, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return cfg, g
}
