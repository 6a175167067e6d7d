package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/parley-im/parley/client"
)

// cmdVerify prints the security code of this account and another one
// (spec.md [S-17-13]) for the two people to compare out of band: when
// the codes match, nobody else's device reads their messages.
func cmdVerify(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("verify", e)
	to := fs.String("to", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("verify: unexpected argument %q", pos[0])
	}
	if *to == "" {
		return usagef("verify needs --to USER or --to +NUMBER")
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	t, err := k.target(*to, "")
	if err != nil {
		return err
	}
	cctx, cancel := k.call()
	defer cancel()
	code, err := k.c.SecurityCode(cctx, t.user)
	if err != nil {
		return k.reason(err)
	}
	con.printf("Security code with %s:", t.name)
	con.printf("%s", groupDigits(code))
	con.printf("It matches the one %s sees (parley verify --to you) when nobody else's device reads your conversation.", t.name)
	return nil
}

// groupDigits shows a security code in groups of five digits, three
// groups to a line.
func groupDigits(code string) string {
	var b strings.Builder
	for i := 0; i < len(code); i += 5 {
		switch {
		case i == 0:
		case i%15 == 0:
			b.WriteByte('\n')
		default:
			b.WriteByte(' ')
		}
		b.WriteString(code[i:min(i+5, len(code))])
	}
	return b.String()
}

// keysChanged renders a KEYS_CHANGED notice ([S-17-5]).
func (k *conn) keysChanged(ev client.KeysChanged) string {
	if ev.User == k.c.User() {
		return fmt.Sprintf("Your account's devices changed (%d with keys now): your security codes changed.", len(ev.Devices))
	}
	name := k.names.of(ev.User)
	return fmt.Sprintf("The security code with %s changed: %s's devices changed. Compare it: parley verify --to %s", name, name, name)
}
