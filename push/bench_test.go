package push_test

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

// BenchmarkDispatch measures pushes per second through a Dispatcher (16
// workers) and each real provider to the fake service on loopback: one
// job per device, all due at once, until every push is reported. The fake
// service runs in the same process and takes its share of the CPU, which
// cpu-µs/push reports (the process's, from getrusage: less sensitive to a
// shared machine than pushes/s).
func BenchmarkDispatch(b *testing.B) {
	for _, tc := range []struct {
		name     string
		provider pb.PushProvider
	}{{"apns", pb.PushProvider_PUSH_APNS}, {"fcm", pb.PushProvider_PUSH_FCM}, {"webhook", pb.PushProvider_PUSH_WEBHOOK}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := pushtest.Start(b)
			ps := providers(b, srv)
			done := make(chan storage.Op, b.N)
			d, err := push.New(push.Config{APNs: ps["apns"], FCM: ps["fcm"], Webhook: ps["webhook"], Queue: b.N + 1, Workers: 16,
				Submit: func(op storage.Op) error { done <- op; return nil }})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ResetTimer()
			start, cpu0 := time.Now(), processCPU()
			for i := range b.N {
				token := "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2" + strconv.Itoa(i)
				if tc.provider == pb.PushProvider_PUSH_WEBHOOK {
					token = srv.WebhookURL(strconv.Itoa(i))
				}
				d.PushDue(storage.PushJob{User: uint64(i + 1), Device: 1, Provider: tc.provider, Token: token, Count: 1})
			}
			for range b.N {
				if op := <-done; op.Push.Outcome != storage.PushSent {
					b.Fatalf("push %+v not sent", op.Push)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pushes/s")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/push")
		})
	}
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
