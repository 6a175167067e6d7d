package server_test

import (
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
)

// BenchmarkConnect measures the accept path: connect to a plaintext node,
// one PING and its PONG, close. Client and server share the process; cpu-µs/op
// is the process's CPU time (user and system, both sides) per connection.
func BenchmarkConnect(b *testing.B) {
	n := nodetest.Start(b, func(c *node.Config) { c.Plaintext = true; c.MediaAddr = "off" })
	addr := n.Addr().String()
	ping := codec.AppendFrame(nil, protocol.KindPing, nil)
	pong := make([]byte, len(codec.AppendFrame(nil, protocol.KindPong, nil)))
	cpu := func() float64 {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e3
	}
	start := cpu()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(ping); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, pong); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric((cpu()-start)/float64(b.N), "cpu-µs/op")
}
