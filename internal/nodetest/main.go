package nodetest

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyMain runs a package's tests and fails the run if one leaves a
// goroutine behind, as goleak.VerifyTestMain does, ignoring gnet's worker
// pool, which lives for the process. Call it from TestMain; extra adds
// goleak options.
func VerifyMain(m *testing.M, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, append([]goleak.Option{
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// Its idle workers (server.Server hands each accepted connection to
		// a loop through it) exit 10 s after their last task.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	}, extra...)...)
}
