package broker

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestCloseWhileClientsComeAndGo closes brokers while clients connect and
// disconnect. Without the close gate mochi's Close deadlocks when a client
// joins or leaves during its client scan (mochi issue 488); here every
// Close must return, promptly and without error.
func TestCloseWhileClientsComeAndGo(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for r := 0; r < rounds; r++ {
		b, err := Start("127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				churn(ctx, b.Addr(), fmt.Sprintf("c%d-%d", r, i))
			}(i)
		}
		time.Sleep(time.Duration(5+r%10) * time.Millisecond)
		closed := make(chan error, 1)
		start := time.Now()
		go func() { closed <- b.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: Close: %v", r, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close did not return", r)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("round %d: Close took %s", r, d)
		}
		cancel()
		wg.Wait()
	}
}

// churn connects and disconnects one client id until ctx ends or the broker
// is gone.
func churn(ctx context.Context, addr, id string) {
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = c.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
		cancel()
		if err == nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		_ = conn.Close()
	}
}
