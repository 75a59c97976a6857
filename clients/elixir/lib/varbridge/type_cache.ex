defmodule VarBridge.TypeCache do
  @moduledoc false
  # Variable types by {url, session id, identifier}, learnt from the
  # server's answers. set_variable needs a type only to tell whether an
  # integer goes to a float variable; everything else is encoded from the
  # term itself and judged by the server.
  use GenServer

  @table __MODULE__
  # Past this many entries the cache starts over: it only saves a read.
  @max_entries 100_000

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, nil}
  end

  def get(url, session, ident) do
    case :ets.lookup(@table, {url, session, ident}) do
      [{_, type}] -> type
      [] -> nil
    end
  end

  # Remembers a variable's type under its name and its id.
  def put(url, session, %VarBridge.Variable{id: id, name: name, type: type}) do
    if :ets.info(@table, :size) > @max_entries, do: :ets.delete_all_objects(@table)
    :ets.insert(@table, [{{url, session, name}, type}, {{url, session, id}, type}])
    :ok
  end

  def forget(url, session, ident), do: :ets.delete(@table, {url, session, ident})

  def forget_session(url, session), do: :ets.match_delete(@table, {{url, session, :_}, :_})
end
