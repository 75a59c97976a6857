defmodule VarBridge.AuthTest do
  # A server started with --require-auth: the creator of a session gets its
  # token and the session sends it; calls and watches without it, or with
  # another, are refused with the server's reasons.
  use ExUnit.Case, async: true

  alias VarBridge.Error

  @moduletag :capture_log

  setup_all do
    server = start_supervised!({VarBridge.Test.Server, extra: ["--require-auth"]})
    {:ok, conn} = VarBridge.connect(url: VarBridge.Test.Server.addrs(server).http)
    %{conn: conn}
  end

  test "the session's token is sent on calls and watches", %{conn: conn} do
    {:ok, s} = VarBridge.initialize_session(conn, "auth-#{System.unique_integer([:positive])}")
    assert s.created and is_binary(s.token) and s.token != ""
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 1)

    {:ok, ref} = VarBridge.watch_variables(s, ["a"], VarBridge.Test.ServerCase.to_me())
    {:ok, _} = VarBridge.set_variable(s, "a", 2)
    assert_receive {:update, "a", 1, 2, _}, 5_000
    :ok = VarBridge.unwatch_variables(ref)

    no_token = %{s | token: nil}

    assert {:error, %Error{code: :unauthenticated, reason: :token_required}} =
             VarBridge.get_variable(no_token, "a")

    assert {:error, %Error{code: :unauthenticated, reason: :token_required}} =
             VarBridge.watch_variables(no_token, ["a"], fn _, _, _, _ -> :ok end)

    other = %{s | token: "not-the-token"}

    assert {:error, %Error{code: :permission_denied, reason: :token_invalid}} =
             VarBridge.get_variable(other, "a")

    # Joining needs the token; with it, the joined session works.
    assert {:error, %Error{code: :already_exists, reason: :token_required}} =
             VarBridge.initialize_session(conn, s.id)

    {:ok, joined} = VarBridge.initialize_session(conn, s.id, token: s.token)
    refute joined.created
    assert {:ok, %{value: 2}} = VarBridge.get_variable(joined, "a")
    {:ok, _} = VarBridge.cleanup_session(s)
  end
end
