defmodule VarBridge.Test.ServerCase do
  @moduledoc false
  # Tests against one real server per test module; each test gets its own
  # session, cleaned up after it.
  use ExUnit.CaseTemplate

  using do
    quote do
      import VarBridge.Test.ServerCase
    end
  end

  setup_all do
    server = start_supervised!(VarBridge.Test.Server)
    {:ok, conn} = VarBridge.connect(url: VarBridge.Test.Server.addrs(server).http)
    %{server: server, conn: conn}
  end

  setup %{conn: conn} = ctx do
    {:ok, session} =
      VarBridge.initialize_session(
        conn,
        "ex-#{ctx.test |> Atom.to_string() |> :erlang.phash2()}-#{System.unique_integer([:positive])}"
      )

    on_exit(fn -> VarBridge.cleanup_session(session) end)
    %{session: session}
  end

  @doc "Waits (bounded) until `f` returns a truthy value, and returns it."
  def eventually(f, tries \\ 200) do
    case f.() do
      x when x in [nil, false] and tries > 0 ->
        Process.sleep(25)
        eventually(f, tries - 1)

      x ->
        x
    end
  end

  @doc "A watch callback that sends each update to the test process."
  def to_me do
    me = self()
    fn ident, old, new, meta -> send(me, {:update, ident, old, new, meta}) end
  end
end
