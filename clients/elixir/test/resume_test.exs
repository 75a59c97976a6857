defmodule VarBridge.ResumeTest do
  use VarBridge.Test.ServerCase, async: true

  alias VarBridge.Test.CutProxy

  @moduletag :capture_log

  # Writes: single sets of "a", and atomic sets of "a", "b" and "c" whose
  # three updates share a revision (so cuts land inside revisions too).
  @writes 1_500
  @cut_every 50

  test "a watch cut again and again resumes with nothing lost or repeated", %{
    session: s,
    server: server
  } do
    %URI{host: host, port: port} = URI.parse(VarBridge.Test.Server.addrs(server).http)
    proxy = start_supervised!({CutProxy, {host, port}})
    through_proxy = %{s | url: "http://127.0.0.1:#{CutProxy.port(proxy)}"}

    for n <- ~w(a b c), do: {:ok, _} = VarBridge.register_variable(s, n, :integer, 0)
    me = self()

    {:ok, ref} =
      VarBridge.watch_variables(
        through_proxy,
        ["a", "b", "c"],
        fn name, old, new, meta -> send(me, {:update, name, old, new, meta.revision}) end,
        include_initial: true,
        backoff: {20, 200}
      )

    cuts =
      for i <- 1..@writes, reduce: 0 do
        cuts ->
          if rem(i, 3) == 0,
            do: {:ok, _} = VarBridge.set_variables(s, %{"a" => i, "b" => i, "c" => i}),
            else: {:ok, _} = VarBridge.set_variable(s, "a", i)

          # Plain cuts, and cuts right after an update that does not
          # complete its revision, in turn.
          case rem(i, 2 * @cut_every) do
            0 ->
              cuts + CutProxy.cut(proxy)

            @cut_every ->
              :ok = CutProxy.cut_mid_revision(proxy)
              cuts

            _ ->
              cuts
          end
      end

    # The initial values, then every write once, in revision order.
    got = collect([], fn {name, _, new, _} -> name == "c" and new == @writes end)
    assert [{"a", nil, 0, r0}, {"b", nil, 0, r0}, {"c", nil, 0, r0} | changes] = got

    want =
      for i <- 1..@writes, name <- if(rem(i, 3) == 0, do: ~w(a b c), else: ~w(a)), do: {name, i}

    assert Enum.map(changes, fn {name, _, new, _} -> {name, new} end) == want
    revs = Enum.map(changes, &elem(&1, 3))
    assert revs == Enum.sort(revs) and hd(revs) > r0

    # Each old value is the value before: nothing in between went missing.
    for {name, old, new, _} <- changes do
      prev = if name == "a", do: new - 1, else: new - 3
      assert old == prev, "#{name}: #{old} -> #{new}"
    end

    [info] = Enum.filter(VarBridge.list_watchers(), &(&1.ref == ref))
    # Cuts happened, some inside a revision, whose updates the server sent
    # again and the watch delivered once.
    assert cuts > 0 and info.reconnects > 0
    assert CutProxy.mid_revision_cuts(proxy) > 0 and info.resent_skipped > 0
    :ok = VarBridge.unwatch_variables(ref)
  end

  test "a session created anew while the watch was away resumes with resync values", %{
    session: s,
    server: server,
    conn: conn
  } do
    %URI{host: host, port: port} = URI.parse(VarBridge.Test.Server.addrs(server).http)
    proxy = start_supervised!({CutProxy, {host, port}})
    through_proxy = %{s | url: "http://127.0.0.1:#{CutProxy.port(proxy)}"}
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 1)
    {:ok, _} = VarBridge.register_variable(s, "b", :string, "x")
    me = self()

    {:ok, ref} =
      VarBridge.watch_variables(
        through_proxy,
        ["a", "b"],
        fn name, old, new, meta ->
          send(me, {:update, name, old, new, Map.take(meta, [:resync, :initial])})
        end,
        backoff: {50, 100},
        max_failures: 1_000
      )

    {:ok, _} = VarBridge.set_variable(s, "a", 2)
    assert_receive {:update, "a", 1, 2, %{resync: false}}, 5_000

    # The server goes away for the watch; meanwhile the session ends and is
    # created again (another incarnation, revisions from 1 again).
    :ok = CutProxy.refuse(proxy, true)
    CutProxy.cut(proxy)
    {:ok, _} = VarBridge.cleanup_session(s)
    {:ok, again} = VarBridge.initialize_session(conn, s.id)
    assert again.incarnation != s.incarnation
    {:ok, _} = VarBridge.register_variable(again, "a", :integer, 10)
    {:ok, _} = VarBridge.register_variable(again, "b", :string, "y")
    {:ok, _} = VarBridge.set_variable(again, "a", 11)
    :ok = CutProxy.refuse(proxy, false)

    # Every watched variable's current value, flagged, then changes again.
    assert_receive {:update, "a", nil, 11, %{resync: true}}, 10_000
    assert_receive {:update, "b", nil, "y", %{resync: true}}, 5_000
    {:ok, _} = VarBridge.set_variable(again, "b", "z")
    assert_receive {:update, "b", "y", "z", %{resync: false}}, 5_000
    refute_received {:update, _, _, _, _}
    :ok = VarBridge.unwatch_variables(ref)
  end

  defp collect(acc, last?) do
    receive do
      {:update, name, old, new, rev} ->
        u = {name, old, new, rev}
        if last?.(u), do: Enum.reverse([u | acc]), else: collect([u | acc], last?)
    after
      30_000 -> flunk("no update for 30 s after #{length(acc)}: last #{inspect(List.first(acc))}")
    end
  end
end
