// Command gridchat is the terminal client of gridchat: it keeps one device's keys and conversations in an
// encrypted local store and talks to any node of the grid.
//
//	gridchat init --node URL --username alice     create an account (this device is its first)
//	gridchat invite [--qr]                       (old device) show a link invitation, then add the new device
//	gridchat link --node URL --code CODE         (new device) join an account with the invitation
//	gridchat contacts add bob                    look bob up in the directory and keep him
//	gridchat chat bob                            interactive chat: type lines, see incoming messages live
//	gridchat send bob "text"                     send one message
//	gridchat history bob                         print a conversation
//	gridchat group create NAME bob carol         create a group; group add/remove/list
//	gridchat verify bob                          print the safety number and its QR code
//	gridchat backup --to DIR | restore --from DIR
//	gridchat devices | revoke DEVICE
//
// State lives in --home (default $GRIDCHAT_HOME, else ~/.gridchat). The store key is kept in
// home/store.key (mode 0600), standing in for the platform keystore.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gridchat:", friendly(err))
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var home string
	root := &cobra.Command{
		Use:   "gridchat",
		Short: "End-to-end encrypted chat over the gridchat grid",
		Long: `gridchat is the terminal client of gridchat, an end-to-end encrypted messenger whose servers are a
peer-to-peer grid of equal nodes. Nodes only ever see ciphertext: this program does all the cryptography.

Start with "gridchat init --node URL --username NAME" (URL is any node's gateway, as printed by
"gridnode swarm"), then "gridchat chat FRIEND".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&home, "home", "", "state directory (default $GRIDCHAT_HOME, else ~/.gridchat)")
	env := &env{home: &home}
	root.AddCommand(
		newInitCmd(env), newInviteCmd(env), newLinkCmd(env), newWhoamiCmd(env), newContactsCmd(env),
		newChatCmd(env), newSendCmd(env), newHistoryCmd(env), newGroupCmd(env), newVerifyCmd(env),
		newBackupCmd(env), newRestoreCmd(env), newDevicesCmd(env), newRevokeCmd(env),
	)
	return root
}
