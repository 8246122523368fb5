package gateway

import (
	"io"
	"log"
	"os"
	"testing"
)

// gopcua's server (the simulated OPC UA server of the demo and the tests)
// prints its node set import with the standard logger; the gateway logs
// through slog only, so the standard logger is silenced for the tests.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}
