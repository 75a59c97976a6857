defmodule VarBridge.CrossLangTest do
  # The seed's reactive scenario across three languages on one server: Go
  # (the varbridge CLI, a Go client) writes temperature; Elixir watches it
  # and writes fan_speed back; a Python watcher sees every fan_speed change.
  use VarBridge.Test.ServerCase, async: true

  @moduletag :crosslang
  @moduletag :capture_log

  @watcher """
  import asyncio, sys, varbridge

  async def main(addr, sid, last):
      async with varbridge.connect(addr) as bridge:
          session = await bridge.session(sid)
          async with session.watch_variables(["fan_speed"], include_initial=True) as w:
              async for u in w:
                  kind = "initial" if u.initial else "change"
                  print(kind, u.variable_name, u.value, flush=True)
                  if not u.initial and u.value == last:
                      return

  asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
  """

  test "Go writes temperature, Elixir reacts with fan_speed, Python sees it", %{
    session: s,
    server: server
  } do
    %{grpc: grpc, bin: bin} = VarBridge.Test.Server.addrs(server)
    {:ok, _} = VarBridge.register_variable(s, "temperature", :float, 0.0)
    {:ok, _} = VarBridge.register_variable(s, "fan_speed", :integer, 0)

    temps = [0.25, 0.5, 0.9, 0.3]
    fans = Enum.map(temps, &round(&1 * 100))

    python =
      Port.open({:spawn_executable, VarBridge.Test.Python.path()}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: ["-c", @watcher, grpc, s.id, Integer.to_string(List.last(fans))]
      ])

    # A failing test must not leave the watcher running.
    {:os_pid, py_pid} = Port.info(python, :os_pid)
    on_exit(fn -> System.cmd("kill", ["-KILL", "#{py_pid}"], stderr_to_stdout: true) end)
    assert_receive {^python, {:data, {:eol, "initial fan_speed 0"}}}, 30_000

    me = self()

    {:ok, ref} =
      VarBridge.watch_variables(s, ["temperature"], fn "temperature", _old, new, meta ->
        send(me, {:temperature, new, meta.source})
        {:ok, _} = VarBridge.set_variable(s, "fan_speed", round(new * 100), source: "elixir")
      end)

    for t <- temps do
      {_, 0} =
        System.cmd(bin, ["--addr", grpc, "--session", s.id, "set", "temperature", to_string(t)])
    end

    for t <- temps, do: assert_receive({:temperature, ^t, "cli"}, 10_000)
    seen = for _ <- fans, do: python_line(python)
    assert seen == Enum.map(fans, &"change fan_speed #{&1}")
    assert_receive {^python, {:exit_status, 0}}, 30_000
    :ok = VarBridge.unwatch_variables(ref)
  end

  defp python_line(port) do
    receive do
      {^port, {:data, {:eol, line}}} -> line
      {^port, {:exit_status, st}} -> flunk("the Python watcher exited with #{st}")
    after
      30_000 -> flunk("no line from the Python watcher in 30 s")
    end
  end
end
