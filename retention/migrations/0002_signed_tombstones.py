"""Sign the purge ledger (issue 13): each tombstone carries an HMAC under an audit key, chained to the previous one.

Tombstones written before this migration are signed here, in ledger order, with the newest audit key: from now
on, a tombstone forged, edited or removed with raw SQL is named by ``verify_audit``.
"""

from django.db import migrations, models

from tasks.audit import GENESIS_HASH


def sign_existing(apps, schema_editor):
    from retention.models import PurgeLedger
    from tasks import keys

    alias = schema_editor.connection.alias
    historical = apps.get_model("retention", "PurgeLedger")
    prev, key_id = GENESIS_HASH, keys.current_key_id()
    for row in historical.objects.using(alias).order_by("pk"):
        values = {f.attname: getattr(row, f.attname) for f in historical._meta.concrete_fields}
        tombstone = PurgeLedger(**{**values, "key_id": key_id, "prev_mac": prev})
        prev = tombstone.expected_mac()
        historical.objects.using(alias).filter(pk=row.pk).update(key_id=key_id, prev_mac=tombstone.prev_mac, mac=prev)


class Migration(migrations.Migration):
    dependencies = [("retention", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="purgeledger",
            name="key_id",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddField(
            model_name="purgeledger",
            name="prev_mac",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="purgeledger",
            name="mac",
            field=models.CharField(
                blank=True, help_text="HMAC-SHA256 (audit key key_id) over prev_mac and the tombstone.", max_length=64
            ),
        ),
        migrations.RunPython(sign_existing, migrations.RunPython.noop),
    ]
