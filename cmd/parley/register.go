package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// cmdRegister registers this machine as a device of a phone number's
// account and stores the credentials in the profile.
func cmdRegister(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("register", e)
	phoneFlag := fs.String("phone", "", "")
	deviceName := fs.String("device-name", "", "")
	force := fs.Bool("force", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("register: unexpected argument %q", pos[0])
	}
	if *phoneFlag == "" {
		return usagef("register needs --phone +NUMBER")
	}
	phone, err := normalisePhone(*phoneFlag)
	if err != nil {
		return err
	}
	name := *deviceName
	if name == "" {
		name, _ = e.hostname()
		name = "parley on " + name
	}
	name = truncateName(name)

	st, err := o.openStore(e, true)
	if err != nil {
		return err
	}
	defer st.Close()
	state, err := st.Load()
	if err != nil {
		return err
	}
	if state.Credentials.User != 0 && !*force {
		return fmt.Errorf("profile %q is already registered as user %d; use --force to register again (this revokes that device) or choose another --profile", o.profile, state.Credentials.User)
	}
	cfg, err := o.config(nil, e)
	if err != nil {
		return err
	}
	con := newConsole(e, o.plain)

	sent, err := client.RequestCode(ctx, cfg, phone)
	if err != nil {
		return fmt.Errorf("requesting a code: %w", err)
	}
	con.statusf("A %d-digit code was sent to %s; it is valid for %v.", sent.CodeLength, phone, sent.ExpiresIn.Round(time.Second))
	in := lines(ctx, e.stdin)
	var creds client.Credentials
	for {
		con.promptf("Code: ")
		line, err := readLine(ctx, in)
		if err != nil {
			return fmt.Errorf("no code entered: %w", err)
		}
		code := strings.Join(strings.Fields(line), "")
		if code == "" {
			continue
		}
		creds, err = client.Verify(ctx, cfg, phone, code, name)
		if client.CodeOf(err) == protocol.CodeCodeInvalid {
			con.statusf("That code is wrong; try again.")
			continue
		}
		if err != nil {
			return fmt.Errorf("verifying the code: %w", err)
		}
		break
	}

	if err := saveDevice(ctx, st, &o, cfg, creds, phone); err != nil {
		return err
	}
	con.printf("Registered %s as user %d, device %d (profile %q, %s).", phone, creds.User, creds.Device, o.profile, st.Path())
	return nil
}
