"""Failure notifications: a Prefect automation that posts to a webhook when an ossforge
flow run fails, crashes or times out.

    python deployments/notify_on_failure.py --webhook-url https://hooks.example/T000/B000

creates (or updates) a `custom-webhook` notification block `ossforge-alerts` and the
automation `ossforge: flow run failed`, which fires on `prefect.flow-run.Failed`,
`.Crashed` and `.TimedOut` events of flow runs tagged `ossforge` (every deployment in
prefect.yaml carries the tag). The webhook receives JSON `{"text": "<subject>\\n<body>"}`,
the shape Slack, Mattermost and Teams incoming webhooks accept; change it with --json-template.
The URL is kept in the block's secret values (masked in the UI and API), never in the automation.
Run it again to change the URL: both are updated in place.
"""

from __future__ import annotations

import argparse
import asyncio
import json

BLOCK_NAME = "ossforge-alerts"
AUTOMATION_NAME = "ossforge: flow run failed"
FAILED_EVENTS = ["prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"]
SUBJECT = "ossforge: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"
BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }}"
    "{% if deployment %} (deployment {{ deployment.name }}){% endif %} ended {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


async def install(webhook_url: str, tag: str = "ossforge", json_template: str | None = None) -> tuple[str, str]:
    """Upsert the block and the automation; returns (block document id, automation id)."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    block = CustomWebhookNotificationBlock(
        name=BLOCK_NAME,
        # The URL usually embeds a token: keep it in the block's secret values (masked in the
        # UI and the API) and let the block substitute it when it sends.
        url="{{webhook_url}}",
        secrets={"webhook_url": webhook_url},
        method="POST",
        json_data=json.loads(json_template) if json_template else {"text": "{{subject}}\n{{body}}"},
    )
    block_id = await block.save(BLOCK_NAME, overwrite=True)

    automation = Automation(
        name=AUTOMATION_NAME,
        description="Posts to the ossforge-alerts webhook when an ossforge flow run fails.",
        trigger=EventTrigger(
            expect=set(FAILED_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    try:
        existing = await Automation.aread(name=AUTOMATION_NAME)
    except ValueError:
        existing = None
    if existing is not None:
        automation.id = existing.id
        await automation.aupdate()
        return str(block_id), str(existing.id)
    created = await automation.acreate()
    return str(block_id), str(created.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", required=True, help="where to POST the notification")
    parser.add_argument("--tag", default="ossforge", help="notify for flow runs carrying this tag")
    parser.add_argument("--json-template", default=None, help='JSON body, e.g. \'{"text": "{{subject}}"}\'')
    args = parser.parse_args()
    block_id, automation_id = asyncio.run(install(args.webhook_url, args.tag, args.json_template))
    print(f"notification block {BLOCK_NAME} ({block_id}); automation '{AUTOMATION_NAME}' ({automation_id})")


if __name__ == "__main__":
    main()
