package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// cmdDevices lists the account's devices.
func cmdDevices(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("devices", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("devices: unexpected argument %q", pos[0])
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	cctx, cancel := k.call()
	defer cancel()
	devs, err := k.c.Devices(cctx)
	if err != nil {
		return k.reason(err)
	}
	for _, d := range devs {
		var notes []string
		if d.Primary {
			notes = append(notes, "primary")
		}
		if d.Online {
			notes = append(notes, "online")
		} else {
			notes = append(notes, "offline")
		}
		if d.ID == k.c.Device() {
			notes = append(notes, "this device")
		}
		con.printf("%d\t%s\t%s\tsince %s", d.ID, sanitize(d.Name), strings.Join(notes, ", "), d.Created.Local().Format("2006-01-02 15:04"))
	}
	return nil
}

// cmdApprove links the companion that shows a code to this account.
func cmdApprove(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("approve", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("approve needs the code the new device shows: parley approve CODE")
	}
	code, err := client.ParseLinkCode(strings.Join(pos, ""))
	if err != nil {
		return usagef("approve: %q is not a link code: want the %d letters and digits parley link shows", strings.Join(pos, " "), protocol.LinkCodeLen)
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	line, err := k.approve(code)
	if err != nil {
		return err
	}
	con.printf("%s", line)
	return nil
}

// approve links the companion showing code and says which device that
// is: the server's answer does not name it, so the device list is read
// before and after, and the new entry is the one approved.
func (k *conn) approve(code string) (string, error) {
	cctx, cancel := k.call()
	defer cancel()
	before, err := k.c.Devices(cctx)
	if err != nil {
		return "", k.reason(err)
	}
	if err := k.c.ApproveLink(cctx, code); err != nil {
		return "", k.reason(err)
	}
	after, err := k.c.Devices(cctx)
	if err != nil {
		return "Approved: a new device is linked to this account (parley devices lists them).", nil
	}
	known := make(map[uint32]bool, len(before))
	for _, d := range before {
		known[d.ID] = true
	}
	var added *client.DeviceInfo
	for i, d := range after {
		if !known[d.ID] && (added == nil || d.ID > added.ID) {
			added = &after[i]
		}
	}
	if added == nil { // revoked again already
		return "Approved: a new device is linked to this account (parley devices lists them).", nil
	}
	return fmt.Sprintf("Approved: %q (device %d) is now linked to this account; if you do not recognise it, run parley revoke %d.",
		sanitizeLine(added.Name), added.ID, added.ID), nil
}

// cmdRevoke removes a device from the account.
func cmdRevoke(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("revoke", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("revoke needs one device id (parley devices lists them)")
	}
	id, err := strconv.ParseUint(pos[0], 10, 32)
	if err != nil || id == 0 {
		return usagef("revoke: %q is not a device id (parley devices lists them)", pos[0])
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	cctx, cancel := k.call()
	defer cancel()
	if err := k.c.RevokeDevice(cctx, uint32(id)); err != nil {
		return k.reason(err)
	}
	if uint32(id) == k.c.Device() {
		con.printf("Revoked this device: it is no longer part of the account, and its profile can be deleted.")
	} else {
		con.printf("Revoked device %d.", id)
	}
	return nil
}

// cmdLink links this machine as a companion device of an account whose
// primary device approves the code it shows.
func cmdLink(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("link", e)
	deviceName := fs.String("device-name", "", "")
	force := fs.Bool("force", false, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("link: unexpected argument %q", pos[0])
	}
	name := *deviceName
	if name == "" {
		name, _ = e.hostname()
		name = "parley on " + name
	}
	name = truncateName(name)
	cfg, err := o.config(nil, e)
	if err != nil {
		return err
	}
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
		return fmt.Errorf("profile %q is already a device of user %d; use --force to replace it or choose another --profile", o.profile, state.Credentials.User)
	}
	con := newConsole(e, o.plain)
	pending, err := client.RequestLink(ctx, cfg, name)
	if err != nil {
		return fmt.Errorf("asking for a link code: %w", err)
	}
	defer pending.Close()
	con.printf("Link code: %s", groupCode(pending.Code))
	con.statusf("On the primary device, run: parley approve %s (or, in a chat there, type /approve %s)", pending.Code, pending.Code)
	con.statusf("Waiting for the approval (the code works for %v)…", pending.ExpiresIn.Round(time.Second))
	wctx, cancel := context.WithTimeout(ctx, pending.ExpiresIn+10*time.Second)
	defer cancel()
	creds, err := pending.Wait(wctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("the code expired before it was approved: run parley link again for a new one")
	}
	if err != nil {
		return fmt.Errorf("waiting for the approval: %w", err)
	}
	if err := saveDevice(ctx, st, &o, cfg, creds, ""); err != nil {
		return err
	}
	con.printf("Linked as device %d of user %d (profile %q, %s).", creds.Device, creds.User, o.profile, st.Path())
	return nil
}

// saveDevice stores new credentials and how to reach the server in the
// profile: a new device starts with a new cursor and cmid space.
func saveDevice(ctx context.Context, st *client.FileStore, o *options, cfg client.Config, creds client.Credentials, phone string) error {
	if err := st.Reset(); err != nil {
		return err
	}
	if err := st.SaveCredentials(creds); err != nil {
		return fmt.Errorf("saving the credentials (link or register again): %w", err)
	}
	ca := o.ca
	if ca != "" {
		if abs, err := filepath.Abs(ca); err == nil {
			ca = abs
		}
	}
	plaintext := ""
	if o.plaintext {
		plaintext = "1"
	}
	for k, v := range map[string]string{
		attrServer: cfg.Addr, attrFingerprint: cfg.Fingerprint, attrCA: ca,
		attrPlaintext: plaintext, attrPhone: phone,
	} {
		if err := st.SetAttr(k, v); err != nil {
			return err
		}
	}
	return publishKeys(ctx, cfg, st, creds)
}

// publishKeys publishes the new device's end-to-end encryption keys
// (spec.md section 17), so that others can write to it before it first
// runs a command that connects.
func publishKeys(ctx context.Context, cfg client.Config, st *client.FileStore, creds client.Credentials) error {
	cfg.ManualAck = true // the inbox is left for the commands that show it
	cfg.OnEvent = func(client.Event) {}
	c, err := client.New(cfg, creds, st)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() {
		cancel()
		_ = c.Close()
		<-done
	}()
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	if err := c.PublishDeviceKeys(pctx); err != nil {
		return fmt.Errorf("publishing the device's encryption keys: %w", err)
	}
	return nil
}

// groupCode shows a link code in groups of four, easier to read out.
func groupCode(code string) string {
	var b strings.Builder
	for i, r := range code {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// truncateName cuts a device name to the protocol's limit, on a
// character boundary.
func truncateName(name string) string {
	if len(name) > protocol.MaxDeviceName {
		name = name[:protocol.MaxDeviceName]
		for !utf8.ValidString(name) {
			name = name[:len(name)-1]
		}
	}
	return name
}
