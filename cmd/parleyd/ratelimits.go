package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/parley-im/parley/server"
)

// rateFlags are the server's rate limits (docs/security.md): a rate and a
// burst per limit, and the switches that say whom they apply to.
type rateFlags struct {
	limits []*rateFlag
	// countLogCodes applies the code limits to the log sender's codes.
	countLogCodes *bool
	// limitLoopback applies the per-address limits to loopback clients.
	limitLoopback *bool
}

// rateFlag is one limit's pair of flags, --NAME-PER and --NAME-burst.
type rateFlag struct {
	name, per string
	unit      float64 // seconds in per
	rate      *float64
	burst     *int
	set       func(*server.Config, server.Budget)
}

// addRateFlags defines the rate-limit flags on fs, with their defaults
// from the environment (PARLEY_ and the flag's name in capitals).
func addRateFlags(fs *flag.FlagSet) (*rateFlags, error) {
	f := &rateFlags{}
	for _, d := range []struct {
		name, per string
		rate      float64
		burst     int
		what      string
		set       func(*server.Config, server.Budget)
	}{
		{"sends", "second", 1000, 2000, "1:1 SENDs of one account, its devices together", func(c *server.Config, b server.Budget) { c.Sends = b }},
		{"group-sends", "second", 200, 400, "group SENDs of one account", func(c *server.Config, b server.Budget) { c.GroupSends = b }},
		{"conn-codes", "minute", 1, 3, "verification codes (SMS) one connection may ask for", func(c *server.Config, b server.Budget) { c.CodesPerConn = b }},
		{"ip-codes", "hour", 20, 10, "verification codes (SMS) one IPv4 address or IPv6 /64 may ask for (loopback exempt unless --limit-loopback)", func(c *server.Config, b server.Budget) { c.CodesPerIP = b }},
		{"prefix-codes", "hour", 100, 20, "verification codes (SMS) for the numbers of one prefix (the first 5 digits after +)", func(c *server.Config, b server.Budget) { c.CodesPerPrefix = b }},
		{"node-codes", "second", 5, 100, "verification codes (SMS) the node sends in all", func(c *server.Config, b server.Budget) { c.CodesPerNode = b }},
		{"ip-link-requests", "minute", 6, 20, "LINK_REQUESTs from one IPv4 address or IPv6 /64 (loopback exempt unless --limit-loopback)", func(c *server.Config, b server.Budget) { c.LinksPerIP = b }},
	} {
		unit := map[string]float64{"second": 1, "minute": 60, "hour": 3600}[d.per]
		rateName, burstName := d.name+"-per-"+d.per, d.name+"-burst"
		rate, err := envFloat(envName(rateName), d.rate)
		if err != nil {
			return nil, err
		}
		burst, err := envInt(envName(burstName), d.burst)
		if err != nil {
			return nil, err
		}
		f.limits = append(f.limits, &rateFlag{
			name: d.name, per: d.per, unit: unit, set: d.set,
			rate:  fs.Float64(rateName, rate, fmt.Sprintf("%s per %s, sustained (0: no limit; RATE_LIMITED beyond)", d.what, d.per)),
			burst: fs.Int(burstName, burst, fmt.Sprintf("%s at once, before --%s applies", d.what, rateName)),
		})
	}
	f.countLogCodes = fs.Bool("count-log-codes", os.Getenv("PARLEY_COUNT_LOG_CODES") == "1",
		"apply the verification-code limits to the codes --sms log writes, as if each cost an SMS (to try the limits; test numbers stay free)")
	f.limitLoopback = fs.Bool("limit-loopback", os.Getenv("PARLEY_LIMIT_LOOPBACK") == "1",
		"apply the per-address limits (connections, handshakes, codes, link requests) to loopback clients too")
	return f, nil
}

// apply checks the flags and sets their limits in c.
func (f *rateFlags) apply(c *server.Config) error {
	for _, l := range f.limits {
		switch {
		case *l.rate < 0 || math.IsNaN(*l.rate) || math.IsInf(*l.rate, 0):
			return fmt.Errorf("--%s-per-%s %v: want 0 (no limit) or more", l.name, l.per, *l.rate)
		case *l.burst < 1:
			return fmt.Errorf("--%s-burst %d: want 1 or more", l.name, *l.burst)
		}
		b := server.Budget{PerSecond: *l.rate / l.unit, Burst: *l.burst}
		if *l.rate == 0 {
			b.PerSecond = -1 // the Config's "no limit"
		}
		l.set(c, b)
	}
	c.LimitLoopback = *f.limitLoopback
	return nil
}

// envName is the environment variable of flag name: PARLEY_ and the name
// in capitals with '_' for '-'.
func envName(name string) string {
	b := []byte("PARLEY_" + name)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func envFloat(name string, def float64) (float64, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a number", name, v)
	}
	return n, nil
}
