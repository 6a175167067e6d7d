package clustertest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/nodetest"
)

func TestMain(m *testing.M) {
	nodetest.VerifyMain(m,
		// As in package cluster: connections embed.Etcd.Close leaves open.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("github.com/soheilhy/cmux.(*MuxConn).Read"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).abortPendingRead"),
	)
}
