-- Argo CD health check for the forgeops kinds (ForgeApp, DistributionPolicy, Installation,
-- BulkUpgrade), from their kstatus conditions:
--   not yet observed (status.observedGeneration behind metadata.generation) -> Progressing
--   a paused BulkUpgrade                                                     -> Suspended
--   Stalled=True (only a change can fix it)                                  -> Degraded
--   Reconciling=True (being worked on, or retrying)                          -> Progressing
--   Ready=True (a cancelled BulkUpgrade too: it stopped as asked)            -> Healthy
--   Ready=False otherwise                                                    -> Degraded
local hs = {}
local function condition(type)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe the latest spec"
  return hs
end
if obj.kind == "BulkUpgrade" and obj.status.state == "Paused" then
  hs.status = "Suspended"
  hs.message = "paused: " .. ((condition("Progressing") or {}).message or "")
  return hs
end
if obj.kind == "BulkUpgrade" and obj.status.state == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "awaiting approval: " .. ((condition("Ready") or {}).message or "")
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
  return hs
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.reason .. ": " .. (reconciling.message or "")
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
if ready ~= nil then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. (ready.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = "no Ready condition yet"
return hs
