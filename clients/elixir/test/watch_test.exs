defmodule VarBridge.WatchTest do
  use VarBridge.Test.ServerCase, async: true

  alias VarBridge.Error

  @moduletag :capture_log

  test "a watch delivers initial values, then every change in order", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "temperature", :float, 0.7)
    {:ok, _} = VarBridge.register_variable(s, "model", :string, "small")

    {:ok, ref} =
      VarBridge.watch_variables(s, [:temperature, "model"], to_me(), include_initial: true)

    assert_receive {:update, :temperature, nil, 0.7,
                    %{initial: true, type: :float, version: 1} = m0},
                   5_000

    assert_receive {:update, "model", nil, "small", %{initial: true}}, 5_000

    for i <- 1..20,
        do:
          {:ok, _} = VarBridge.set_variable(s, "temperature", i / 10, metadata: %{"i" => "#{i}"})

    {:ok, _} = VarBridge.set_variable(s, "model", "large", source: "tuner")

    revs =
      for i <- 1..20 do
        want = i / 10

        assert_receive {:update, :temperature, _old, ^want,
                        %{initial: false, revision: rev, metadata: md}},
                       5_000

        assert md == %{"i" => "#{i}"}
        rev
      end

    assert revs == Enum.sort(revs) and hd(revs) > m0.revision

    assert_receive {:update, "model", "small", "large",
                    %{source: "tuner", timestamp: %DateTime{}}},
                   5_000

    assert :ok = VarBridge.unwatch_variables(ref)
  end

  test "old values follow the variable; 0.7 -> 1 reads as floats", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "t", :float, 0.5)
    {:ok, ref} = VarBridge.watch_variables(s, ["t"], to_me())
    {:ok, _} = VarBridge.set_variable(s, "t", 1)
    {:ok, _} = VarBridge.set_variable(s, "t", 2)
    assert_receive {:update, "t", 0.5, 1.0, %{revision: r1}}, 5_000
    assert_receive {:update, "t", 1.0, 2.0, %{revision: r2}}, 5_000
    assert r2 > r1
    :ok = VarBridge.unwatch_variables(ref)
  end

  test "a server-side filter sends only what it accepts", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "temperature", :float, 20.0)
    {:ok, ref} = VarBridge.watch_variables(s, ["temperature"], to_me(), filter: "new - old > 1.0")

    for v <- [20.5, 22.0, 22.5, 25.0, 24.0],
        do: {:ok, _} = VarBridge.set_variable(s, "temperature", v)

    {:ok, _} = VarBridge.set_variable(s, "temperature", 30.0, metadata: %{"last" => "yes"})

    assert_receive {:update, "temperature", 20.5, 22.0, _}, 5_000
    assert_receive {:update, "temperature", 22.5, 25.0, _}, 5_000
    assert_receive {:update, "temperature", 24.0, 30.0, %{metadata: %{"last" => "yes"}}}, 5_000
    refute_received {:update, _, _, _, _}
    :ok = VarBridge.unwatch_variables(ref)
  end

  test "updates a filter rejects still advance the resume point (heartbeats)", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "t", :float, 0.0)

    {:ok, ref} =
      VarBridge.watch_variables(s, ["t"], to_me(), filter: "new > 100.0", heartbeat: 20)

    for v <- 1..5, do: {:ok, _} = VarBridge.set_variable(s, "t", v * 1.0)
    {:ok, %{revision: rev}} = VarBridge.get_session(s)

    assert eventually(fn ->
             match?(
               [%{last_revision: ^rev}],
               Enum.filter(VarBridge.list_watchers(), &(&1.ref == ref))
             )
           end)

    refute_received {:update, _, _, _, _}
    :ok = VarBridge.unwatch_variables(ref)
  end

  test "a watch of every variable sees ones registered later, and deletions", %{session: s} do
    {:ok, ref} = VarBridge.watch_variables(s, [], to_me())
    {:ok, v} = VarBridge.register_variable(s, "late", :integer, 1)
    {:ok, _} = VarBridge.set_variable(s, "late", 2)
    {:ok, _} = VarBridge.delete_variable(s, "late")
    assert_receive {:update, "late", 1, 2, %{id: id}}, 5_000
    assert id == v.id
    assert_receive {:update, "late", 2, nil, %{deleted: true}}, 5_000
    :ok = VarBridge.unwatch_variables(ref)
  end

  test "an unknown variable fails the watch call", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 1)

    assert {:error, %Error{code: :not_found, reason: :variable_not_found}} =
             VarBridge.watch_variables(s, ["a", "missing"], to_me())

    assert {:error, %Error{reason: :invalid_argument}} =
             VarBridge.watch_variables(s, ["a"], to_me(), filter: "this is not CEL")

    assert VarBridge.list_watchers() |> Enum.filter(&(&1.session_id == s.id)) == []
  end

  test "unwatch stops the stream on the server and the callbacks here", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 0)
    {:ok, ref} = VarBridge.watch_variables(s, ["a"], to_me())

    assert [%{ref: ^ref, pid: pid, identifiers: ["a"]}] =
             Enum.filter(VarBridge.list_watchers(), &(&1.ref == ref))

    assert {:ok, %{watch_count: 1}} = VarBridge.get_session(s)
    {:ok, _} = VarBridge.set_variable(s, "a", 1)
    assert_receive {:update, "a", 0, 1, _}, 5_000

    assert :ok = VarBridge.unwatch_variables(ref)
    refute Process.alive?(pid)

    assert {:error, %Error{code: :not_found, reason: :unknown_watch}} =
             VarBridge.unwatch_variables(ref)

    assert eventually(fn -> match?({:ok, %{watch_count: 0}}, VarBridge.get_session(s)) end)
    {:ok, _} = VarBridge.set_variable(s, "a", 2)
    refute_receive {:update, "a", _, _, _}, 200
  end

  test "a raising callback is counted and the watch goes on", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 0)
    me = self()

    {:ok, ref} =
      VarBridge.watch_variables(s, ["a"], fn _, _, new, _ ->
        if new == 1, do: raise("boom")
        send(me, {:got, new})
      end)

    {:ok, _} = VarBridge.set_variable(s, "a", 1)
    {:ok, _} = VarBridge.set_variable(s, "a", 2)
    assert_receive {:got, 2}, 5_000

    assert [%{errors: 1, updates_received: 2}] =
             Enum.filter(VarBridge.list_watchers(), &(&1.ref == ref))

    :ok = VarBridge.unwatch_variables(ref)
  end

  test "cleaning up the session ends its watches with the server's reason", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 0)
    me = self()
    {:ok, ref} = VarBridge.watch_variables(s, ["a"], to_me(), on_error: &send(me, {:ended, &1}))
    {:ok, 1} = VarBridge.cleanup_session(s)

    assert_receive {:ended,
                    %Error{
                      code: :not_found,
                      reason: :session_closed,
                      details: %{"cause" => "cleaned_up"}
                    }},
                   5_000

    assert eventually(fn -> VarBridge.unwatch_variables(ref) != :ok end)
  end

  test "a watch stops when the process that started it exits", %{session: s} do
    {:ok, _} = VarBridge.register_variable(s, "a", :integer, 0)
    me = self()

    owner =
      spawn(fn ->
        send(me, VarBridge.watch_variables(s, ["a"], fn _, _, _, _ -> :ok end))
        receive do: (:stop -> :ok)
      end)

    assert_receive {:ok, ref}, 5_000
    assert [%{pid: pid}] = Enum.filter(VarBridge.list_watchers(), &(&1.ref == ref))
    mref = Process.monitor(pid)
    send(owner, :stop)
    assert_receive {:DOWN, ^mref, :process, ^pid, :normal}, 5_000
  end
end
