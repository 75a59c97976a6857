defmodule VarBridge.Application do
  @moduledoc false
  use Application

  # The :httpc profile of unary calls. Watches read their event streams from
  # sockets of their own (VarBridge.HTTPStream), so a long-lived stream
  # never holds up a unary call queued behind it on a kept-alive connection.
  @profile :varbridge

  def profile, do: @profile

  @impl true
  def start(_type, _args) do
    case :inets.start(:httpc, profile: @profile) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    :ok = :httpc.set_options([max_sessions: 8, keep_alive_timeout: 30_000], @profile)

    children = [
      VarBridge.TypeCache,
      {Registry, keys: :unique, name: VarBridge.Watches},
      {DynamicSupervisor, strategy: :one_for_one, name: VarBridge.WatchSupervisor}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: VarBridge.Supervisor)
  end

  @impl true
  def stop(_state) do
    :inets.stop(:httpc, @profile)
    :ok
  end
end
