package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"

	"github.com/iagon/gridchat/client"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/link"
)

func newInitCmd(e *env) *cobra.Command {
	var nodes []string
	var username string
	cmd := &cobra.Command{
		Use:   "init --node URL --username NAME",
		Short: "Create an account whose first device is this one",
		Long: `Create a new account on the grid with this device as its first device, and claim a username.
--node is any node's gateway URL (http://127.0.0.1:PORT as printed by "gridnode swarm"); give it several
times to have fallbacks. The device's keys never leave this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(nodes) == 0 {
				return usagef("init needs --node URL (any node's gateway)")
			}
			if username == "" {
				return usagef("init needs --username NAME (a-z, 0-9, '.', '_', '-')")
			}
			cfg, err := e.config(nodes, true)
			if err != nil {
				return err
			}
			c, err := client.Register(cmd.Context(), cfg, username)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := e.saveSettings(settings{Gateways: nodes}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "account %s created for %s\ndevice %s\n", c.Account(), c.Username(), c.Device())
			publishKey(cmd.Context(), c, cmd.ErrOrStderr())
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&nodes, "node", nil, "gateway URL of any node (repeatable)")
	cmd.Flags().StringVar(&username, "username", "", "username to claim")
	return cmd
}

func newInviteCmd(e *env) *cobra.Command {
	var qr bool
	var noHistory bool
	cmd := &cobra.Command{
		Use:   "invite",
		Short: "Link a new device to this account (run on the old device)",
		Long: `Show a single-use invitation (a short code, or with --qr a QR code) and wait for the new device
to run "gridchat link" with it. The new device is added to the account and then gets this device's
conversation history, end to end encrypted through the grid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			kind := link.KindShortCode
			if qr {
				kind = link.KindQR
			}
			inv, err := c.InviteDevice(kind)
			if err != nil {
				return err
			}
			// The rendezvous lives on the gateway this device is connected to: open it before showing the
			// invitation, and tell the new device where it is.
			ctx, cancel := context.WithTimeout(cmd.Context(), link.DefaultLifetime)
			defer cancel()
			relay, err := c.HostRelay(ctx, inv)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var join string
			if qr {
				text := base64.RawURLEncoding.EncodeToString(inv.QRPayload)
				qrterminal.GenerateHalfBlock(text, qrterminal.L, out)
				fmt.Fprintf(out, "link payload: %s\n", text)
				join = "--payload " + text
			} else {
				fmt.Fprintf(out, "link code: %s\n", inv.ShortCode)
				join = "--code " + inv.ShortCode
			}
			fmt.Fprintf(out, "link gateway: %s\n", relay.Gateway())
			fmt.Fprintf(out, "on the new device run: gridchat link --node %s %s\n", relay.Gateway(), join)
			fmt.Fprintf(out, "waiting for the new device (this invitation ends in %s)\n", link.DefaultLifetime)
			dev, err := c.HostLink(ctx, inv, relay)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "device %s linked\n", dev)
			if noHistory {
				return nil
			}
			hctx, hcancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer hcancel()
			n, err := c.SendHistory(hctx, dev)
			if err != nil {
				return fmt.Errorf("device linked, but the history transfer failed: %w", err)
			}
			fmt.Fprintf(out, "history sent (%d entries)\n", n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&qr, "qr", false, "show a QR code instead of a short code")
	cmd.Flags().BoolVar(&noHistory, "no-history", false, "do not send the conversation history")
	return cmd
}

func newLinkCmd(e *env) *cobra.Command {
	var nodes []string
	var code, payload string
	cmd := &cobra.Command{
		Use:   "link --node URL (--code CODE | --payload TEXT)",
		Short: "Join an existing account as a new device (run on the new device)",
		Long: `Join the account of the device that ran "gridchat invite". --node must be the link gateway that
"gridchat invite" printed: the invitation waits there, and only there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(nodes) == 0 {
				return usagef("link needs --node URL")
			}
			var qrBytes []byte
			if payload != "" {
				var err error
				if qrBytes, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(payload)); err != nil {
					return usagef("--payload is not a link payload: %v", err)
				}
			} else if code == "" {
				return usagef("link needs --code CODE or --payload TEXT from \"gridchat invite\" on the old device")
			}
			ticket, err := client.ParseInvitation(qrBytes, code)
			if err != nil {
				return err
			}
			cfg, err := e.config(nodes, true)
			if err != nil {
				return err
			}
			relay, err := client.JoinRelay(cmd.Context(), cfg, ticket)
			if err != nil {
				return err
			}
			c, err := client.Link(cmd.Context(), cfg, ticket, relay)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := e.saveSettings(settings{Gateways: nodes}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s linked to account %s\n", c.Device(), c.Account())
			publishKey(cmd.Context(), c, cmd.ErrOrStderr())
			return waitHistory(cmd.Context(), c, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringArrayVar(&nodes, "node", nil, "the link gateway shown by \"gridchat invite\" (repeatable)")
	cmd.Flags().StringVar(&code, "code", "", "the short code shown by the old device")
	cmd.Flags().StringVar(&payload, "payload", "", "the link payload shown under the old device's QR code")
	return cmd
}

// publishKey makes sure a new device's messaging key is in the directory before the command exits, so others
// can start conversations with it while it is offline. The account exists either way: a failure is a warning.
func publishKey(ctx context.Context, c *client.Client, errOut io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.PublishKey(ctx); err != nil {
		fmt.Fprintf(errOut, "gridchat: warning: this device's messaging key is not in the directory yet (%v); others can "+
			"start conversations with it once it has been online (gridchat chat)\n", err)
	}
}

// waitHistory waits a while for the old device's history transfer.
func waitHistory(ctx context.Context, c *client.Client, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		select {
		case ev := <-c.Events():
			if h, ok := ev.(*client.HistoryEvent); ok {
				fmt.Fprintf(out, "history received: %d messages\n", h.Messages)
				return nil
			}
		case <-ctx.Done():
			fmt.Fprintln(out, "no history received (the old device may have skipped it)")
			return nil
		}
	}
}

func newWhoamiCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Print this device's account, username and device ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "username %s\naccount %s\ndevice %s\n", c.Username(), c.Account(), c.Device())
			return nil
		},
	}
}

func newContactsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "contacts",
		Short: "List contacts (see \"contacts add\")",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			for _, ct := range c.Contacts() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", ct.Username, ct.Account)
			}
			return nil
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "add USERNAME",
		Short: "Look a username up in the directory and keep it as a contact",
		Args:  exactArgs(1, "contacts add needs one USERNAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			ct, err := c.AddContact(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s (%s)\n", ct.Username, ct.Account)
			return nil
		},
	})
	return cmd
}

func exactArgs(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s", msg)
		}
		return nil
	}
}

func printMessage(out io.Writer, nm map[e2ee.AccountID]string, m client.Message) {
	who := displayName(nm, m.Sender)
	ts := m.Sent.Local().Format("15:04:05")
	if m.Unsupported {
		fmt.Fprintf(out, "[%s] %s: [message of a type this client does not support (%d); update gridchat]\n", ts, who, m.Type)
		return
	}
	switch m.Type {
	case client.PayloadText:
		fmt.Fprintf(out, "[%s] %s: %s\n", ts, who, m.Text)
	case client.PayloadAttachment:
		fmt.Fprintf(out, "[%s] %s: [file %s, %s, %d bytes]\n", ts, who, m.Attachment.Name, m.Attachment.MIME, len(m.Attachment.Data))
	case client.PayloadGroupState:
		if m.Group != nil {
			fmt.Fprintf(out, "[%s] %s updated group %q: %d members\n", ts, who, m.Group.Name, len(m.Group.Members))
		}
	}
}

func printEvent(out io.Writer, nm map[e2ee.AccountID]string, conv e2ee.ConversationID, ev client.Event) (incoming bool) {
	switch ev := ev.(type) {
	case *client.MessageEvent:
		if ev.Message.Conversation != conv {
			return false
		}
		printMessage(out, nm, ev.Message)
		return !ev.Message.Outgoing && ev.Message.Type == client.PayloadText
	case *client.GapEvent:
		switch ev.Reason {
		case client.GapMissing:
			fmt.Fprintf(out, "! %d message(s) from device %s are missing; asked for them again\n", ev.Count, ev.SenderDevice.String()[:12])
		case client.GapUndecryptable:
			fmt.Fprintf(out, "! a message from device %s could not be decrypted yet; asked for its key again\n", ev.SenderDevice.String()[:12])
		default:
			fmt.Fprintf(out, "! %d message(s) from device %s %s before this device came online\n", ev.Count, ev.SenderDevice.String()[:12], ev.Reason)
		}
	case *client.SafetyNumberEvent:
		fmt.Fprintf(out, "! the safety number with %s changed (a device was linked or revoked); compare it again with \"gridchat verify\"\n", displayName(nm, ev.Account))
	case *client.ConnectionEvent:
		if ev.Err != nil {
			fmt.Fprintf(out, "! disconnected from %s; reconnecting\n", ev.Gateway)
		}
	}
	return false
}

func newChatCmd(e *env) *cobra.Command {
	var group bool
	var until int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "chat USER",
		Short: "Chat with a user (or with --group, a group): type lines, see incoming messages live",
		Long: `Open a conversation, print its history, then send every line typed and print incoming
messages as they arrive. "/quit" or end of input ends the chat. For scripts: --until N exits after N new
incoming messages (waiting after end of input at most --timeout).`,
		Args: exactArgs(1, "chat needs one USER (or group name with --group)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cv, err := conversation(cmd.Context(), c, args[0], group)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			nm := names(c)
			fmt.Fprintf(out, "chatting with %s (type /quit to leave)\n", args[0])
			history, err := c.Messages(cv.ID)
			if err != nil {
				return err
			}
			for _, m := range history {
				printMessage(out, nm, m)
			}
			lines := make(chan string)
			go readLines(cmd.InOrStdin(), lines) // ends with the process; stdin cannot be interrupted
			received := 0
			var deadline <-chan time.Time
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						lines = nil
						if until <= 0 || received >= until {
							return nil
						}
						deadline = time.After(timeout)
						continue
					}
					line = strings.TrimSpace(line)
					if line == "" {
						continue
					}
					if line == "/quit" {
						return nil
					}
					if _, err := c.SendText(cmd.Context(), cv.ID, line); err != nil {
						fmt.Fprintf(out, "! not sent: %v\n", friendly(err))
					}
				case ev, ok := <-c.Events():
					if !ok {
						return nil
					}
					if printEvent(out, nm, cv.ID, ev) {
						received++
						if until > 0 && received >= until {
							return nil
						}
					}
				case <-deadline:
					return fmt.Errorf("received %d of %d messages within %s", received, until, timeout)
				case <-cmd.Context().Done():
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&group, "group", false, "USER names a group (by name or ID prefix)")
	cmd.Flags().IntVar(&until, "until", 0, "exit after this many new incoming messages")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --until: how long to wait after end of input")
	return cmd
}

func readLines(r io.Reader, out chan<- string) {
	defer close(out)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), client.MaxTextBytes)
	for sc.Scan() {
		out <- sc.Text()
	}
}

func newSendCmd(e *env) *cobra.Command {
	var group bool
	var file string
	cmd := &cobra.Command{
		Use:   "send USER [TEXT]",
		Short: "Send one message (or with --file, a small attachment)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cv, err := conversation(cmd.Context(), c, args[0], group)
			if err != nil {
				return err
			}
			var seq uint64
			switch {
			case file != "":
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				seq, err = c.SendAttachment(cmd.Context(), cv.ID, client.Attachment{Name: file, MIME: "application/octet-stream", Data: data})
				if err != nil {
					return err
				}
			case len(args) == 2:
				if seq, err = c.SendText(cmd.Context(), cv.ID, args[1]); err != nil {
					return err
				}
			default:
				return usagef("send needs TEXT or --file")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sent #%d\n", seq)
			return nil
		},
	}
	cmd.Flags().BoolVar(&group, "group", false, "USER names a group")
	cmd.Flags().StringVar(&file, "file", "", "send this file as an attachment")
	return cmd
}

func newHistoryCmd(e *env) *cobra.Command {
	var group bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "history USER",
		Short: "Print a conversation (after receiving for --wait)",
		Args:  exactArgs(1, "history needs one USER (or group with --group)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cv, err := conversation(cmd.Context(), c, args[0], group)
			if err != nil {
				return err
			}
			if wait > 0 {
				select {
				case <-time.After(wait):
				case <-cmd.Context().Done():
				}
			}
			ms, err := c.Messages(cv.ID)
			if err != nil {
				return err
			}
			nm := names(c)
			for _, m := range ms {
				printMessage(cmd.OutOrStdout(), nm, m)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&group, "group", false, "USER names a group")
	cmd.Flags().DurationVar(&wait, "wait", 0, "receive for this long before printing")
	return cmd
}

func newGroupCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "group", Short: "Create and manage groups (create, add, remove, list)"}
	create := &cobra.Command{
		Use:   "create NAME MEMBER...",
		Short: "Create a group with you as admin",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("group create needs a NAME and at least one MEMBER")
			}
			return nil
		},
		RunE: withClient(e, func(cmd *cobra.Command, c *client.Client, args []string) error {
			cv, err := c.CreateGroup(cmd.Context(), args[0], args[1:]...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %q created: %s\n", args[0], cv.ID)
			return nil
		}),
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List groups",
		Args:  cobra.NoArgs,
		RunE: withClient(e, func(cmd *cobra.Command, c *client.Client, _ []string) error {
			nm := names(c)
			for _, cv := range c.Conversations() {
				if cv.Kind != client.Group || cv.Group == nil {
					continue
				}
				var ms []string
				for _, m := range cv.Group.Members {
					n := displayName(nm, m)
					if cv.Group.IsAdmin(m) {
						n += "*"
					}
					ms = append(ms, n)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %q %s\n", cv.ID.String()[:12], cv.Group.Name, strings.Join(ms, " "))
			}
			return nil
		}),
	}
	cmd.AddCommand(create,
		groupMemberCmd(e, "add", "Add a member (admins only)", "added", (*client.Client).AddMember),
		groupMemberCmd(e, "remove", "Remove a member (admins only); later messages start a new session without them",
			"removed", (*client.Client).RemoveMember),
		list)
	return cmd
}

// withClient makes a command's run function: it opens e's client, runs f with it and closes it.
func withClient(e *env, f func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := e.open(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		return f(cmd, c, args)
	}
}

// groupMemberCmd makes "group add" and "group remove": both take GROUP and USER, apply change to the group's
// membership and print done ("added", "removed") and the user.
func groupMemberCmd(e *env, verb, short, done string,
	change func(*client.Client, context.Context, e2ee.ConversationID, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " GROUP USER",
		Short: short,
		Args:  exactArgs(2, "group "+verb+" needs GROUP and USER"),
		RunE: withClient(e, func(cmd *cobra.Command, c *client.Client, args []string) error {
			cv, err := conversation(cmd.Context(), c, args[0], true)
			if err != nil {
				return err
			}
			if err := change(c, cmd.Context(), cv.ID, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", done, args[1])
			return nil
		}),
	}
}

func newVerifyCmd(e *env) *cobra.Command {
	var group bool
	var scanned string
	cmd := &cobra.Command{
		Use:   "verify USER",
		Short: "Print the conversation's safety number and its QR code, or check one scanned from the other side",
		Args:  exactArgs(1, "verify needs one USER (or group with --group)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cv, err := conversation(cmd.Context(), c, args[0], group)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if scanned != "" {
				b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(scanned))
				if err != nil {
					return usagef("--check is not a safety payload: %v", err)
				}
				ok, err := c.VerifySafetyNumber(cmd.Context(), cv.ID, b)
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("the safety numbers DO NOT match: do not trust this conversation until you know why")
				}
				fmt.Fprintln(out, "the safety numbers match")
				return nil
			}
			n, err := c.SafetyNumber(cmd.Context(), cv.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "safety number: %s\n", n)
			text := base64.RawURLEncoding.EncodeToString(n.QRPayload())
			qrterminal.GenerateHalfBlock(text, qrterminal.L, out)
			fmt.Fprintf(out, "payload: %s\n", text)
			return nil
		},
	}
	cmd.Flags().BoolVar(&group, "group", false, "USER names a group")
	cmd.Flags().StringVar(&scanned, "check", "", "a payload shown by the other side's \"gridchat verify\"")
	return cmd
}

// passphrase reads GRIDCHAT_PASSPHRASE or one line of standard input.
func passphrase(cmd *cobra.Command) (string, error) {
	if p := os.Getenv("GRIDCHAT_PASSPHRASE"); p != "" {
		return p, nil
	}
	fmt.Fprint(cmd.ErrOrStderr(), "passphrase: ")
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no passphrase: set GRIDCHAT_PASSPHRASE or type it")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func newBackupCmd(e *env) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "backup --to DIR",
		Short: "Write an encrypted backup of this device (keys and history), protected by a passphrase",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usagef("backup needs --to DIR")
			}
			pass, err := passphrase(cmd)
			if err != nil {
				return err
			}
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Backup(cmd.Context(), client.FileBlobStore{Dir: to}, pass); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup written to %s\n", to)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "directory to write the backup into")
	return cmd
}

func newRestoreCmd(e *env) *cobra.Command {
	var from string
	var nodes []string
	cmd := &cobra.Command{
		Use:   "restore --from DIR --node URL",
		Short: "Restore a device from a backup with its passphrase (into an empty --home)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || len(nodes) == 0 {
				return usagef("restore needs --from DIR and --node URL")
			}
			pass, err := passphrase(cmd)
			if err != nil {
				return err
			}
			cfg, err := e.config(nodes, true)
			if err != nil {
				return err
			}
			c, err := client.Restore(cmd.Context(), cfg, client.FileBlobStore{Dir: from}, pass)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := e.saveSettings(settings{Gateways: nodes}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored account %s (%s), %d conversations\n", c.Account(), c.Username(), len(c.Conversations()))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "directory holding the backup")
	cmd.Flags().StringArrayVar(&nodes, "node", nil, "gateway URL of any node (repeatable)")
	return cmd
}

func newDevicesCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List this account's devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cur, revoked, err := c.Devices(cmd.Context())
			if err != nil {
				return err
			}
			for _, d := range cur {
				mark := ""
				if d.ID == c.Device() {
					mark = " (this device)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s added %s%s\n", d.ID, d.Added.Format(time.DateTime), mark)
			}
			for _, d := range revoked {
				fmt.Fprintf(cmd.OutOrStdout(), "%s revoked\n", d.ID)
			}
			return nil
		},
	}
}

func newRevokeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke DEVICE",
		Short: "Revoke a device of this account (give its ID or an unambiguous prefix)",
		Args:  exactArgs(1, "revoke needs one DEVICE ID (see \"gridchat devices\")"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			cur, _, err := c.Devices(cmd.Context())
			if err != nil {
				return err
			}
			var match []e2ee.DeviceID
			for _, d := range cur {
				if strings.HasPrefix(d.ID.String(), strings.ToLower(args[0])) {
					match = append(match, d.ID)
				}
			}
			if len(match) != 1 {
				return fmt.Errorf("%d current devices match %q (see \"gridchat devices\")", len(match), args[0])
			}
			if err := c.Revoke(cmd.Context(), match[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s revoked\n", match[0])
			return nil
		},
	}
}
