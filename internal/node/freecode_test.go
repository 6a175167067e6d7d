package node

import (
	"testing"

	"github.com/parley-im/parley/storage"
)

// gatewayCodes stands for an SMS gateway: a code sender that is not the
// log sender.
type gatewayCodes struct{}

func (gatewayCodes) SendCode(_, _ string, done func(error)) { done(nil) }

// TestFreeCode: which codes the server's code limits count ([S-9-17]):
// those that cost an SMS, not the log sender's (unless CountLogCodes),
// not the test numbers', and none with FreeCodes.
func TestFreeCode(t *testing.T) {
	test := storage.Config{TestPrefix: "+1999", TestCode: "000000"}
	for _, tc := range []struct {
		name       string
		cfg        Config
		user       func(string) bool
		real, fake bool // free: a real number, a test number
	}{
		{"log sender", Config{Codes: LogCodes{}, Storage: test}, nil, true, true},
		{"log sender counted", Config{Codes: LogCodes{}, CountLogCodes: true, Storage: test}, nil, false, true},
		{"gateway", Config{Codes: gatewayCodes{}, Storage: test}, nil, false, true},
		{"gateway, no test numbers", Config{Codes: gatewayCodes{}}, nil, false, false},
		{"gateway, all free", Config{Codes: gatewayCodes{}, FreeCodes: true}, nil, true, true},
		{"gateway, the server's own rule", Config{Codes: gatewayCodes{}}, func(p string) bool { return p == "+4477009" }, false, true},
	} {
		free := freeCode(tc.cfg, tc.user)
		fake := "+1999000123"
		if tc.user != nil {
			fake = "+4477009"
		}
		if got := free("+4477009001"); got != tc.real {
			t.Errorf("%s: a real number free = %v, want %v", tc.name, got, tc.real)
		}
		if got := free(fake); got != tc.fake {
			t.Errorf("%s: %s free = %v, want %v", tc.name, fake, got, tc.fake)
		}
	}
}
